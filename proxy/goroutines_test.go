package proxy

import (
	rtmetrics "runtime/metrics"
	"testing"
)

// goroutinesCreated is how many goroutines the process has started.
func goroutinesCreated(t *testing.T) uint64 {
	t.Helper()
	s := []rtmetrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		t.Skip("runtime does not count goroutines created")
	}
	return s[0].Value.Uint64()
}

// A call set up through the proxy with its retry plan (every new INVITE
// admission places has one) starts no goroutine of its own once sipgo's
// message workers are up: the relay loop, failover included, runs on the
// worker that took the INVITE, and each response comes to it straight from
// the client transaction. While failover had a runner goroutine of its
// own, every call started one (1.0 per call, and a second channel hop per
// response).
func TestCallSetup_StartsNoGoroutinePerCall(t *testing.T) {
	r := newCallRig(t, false)
	for i := range 50 {
		r.setUp(100000+i, false) // warm: sipgo's workers exist
	}
	const calls = 300
	before := goroutinesCreated(t)
	for i := range calls {
		r.setUp(i, false)
	}
	created := goroutinesCreated(t) - before
	if per := float64(created) / calls; per > 0.2 {
		t.Errorf("%d goroutines started for %d call set-ups (%.2f per call), want none per call", created, calls, per)
	}
}
