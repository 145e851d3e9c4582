package relay

// Poll relays, from the calling goroutine, what the pool's sockets hold
// now, unless a worker is relaying them already. It is for the periodic
// passes of the process the relay lives in (the media loop's presence and
// conference passes): a worker is a goroutine parked in the runtime's
// netpoller, and with one P (sipedge pinned to one core) the runtime
// looks at the netpoller only when nothing else is runnable, so a packet
// that arrives while such a pass computes waits until the pass blocks.
// A pass that calls Poll between chunks of its work bounds that wait by
// the length of a chunk. Poll costs one epoll_wait per worker when
// nothing is ready. Safe for concurrent use; a no-op off Linux, where a
// socket has a goroutine of its own.
func (p *Pool) Poll() { p.workers.poll() }
