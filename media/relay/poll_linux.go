//go:build linux

package relay

// pollRounds bounds the rounds one Poll relays per worker: a socket a
// burst did not empty stays queued for the worker's goroutine, which Poll
// wakes for it (poll), so Poll never keeps its caller longer than that
// under a flood.
const pollRounds = 4

// poll runs a round of each worker that is not in one.
func (ws *workerSet) poll() {
	ws.mu.Lock()
	running := ws.ws
	ws.mu.Unlock()
	for _, w := range running {
		w.poll()
	}
}

// poll drains what is ready on w's sockets now, in the caller's goroutine,
// unless w's goroutine holds w.mu: then it is in a round and relays them.
func (w *worker) poll() {
	if !w.mu.TryLock() {
		return
	}
	defer w.mu.Unlock()
	for range pollRounds {
		if w.stopped {
			return
		}
		n := w.wait(0, &w.pevs)
		if !w.handle(w.pevs[:n]) {
			return
		}
	}
	// Work is left for the worker's goroutine, but the readiness Poll
	// consumed may never reach it: the netpoller's epoll re-checks the
	// worker's epoll fd when it collects the event, finds nothing ready
	// any more and drops it, and an edge-triggered socket a burst did not
	// empty says nothing more until its next packet. Seen as 59 of 320
	// packets left in the socket under CPU load
	// (TestPool_PollLeavesTheRestToTheWorker).
	w.wake()
}
