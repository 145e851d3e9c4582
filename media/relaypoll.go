package media

// relayPollEvery is how many items (sessions, conferences, queued writes,
// counters) a pass of the loop handles between two polls of the relay:
// with one P the relay's worker cannot run while a pass computes, and
// relay.Pool.Poll relays what arrived meanwhile from the pass's goroutine
// (BENCHMARKS.md, "Relay tail latency"). One item costs about a
// microsecond, so a packet waits for at most some 64 of them.
const relayPollEvery = 64

// pollRelay polls the relay before item i of a pass when i is a multiple
// of relayPollEvery (the first: what arrived while a round trip ended).
func (mg *Manager) pollRelay(i int) {
	if i%relayPollEvery == 0 {
		mg.opts.Pool.Poll()
	}
}
