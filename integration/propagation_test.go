package integration

import (
	"fmt"
	"testing"
	"time"
)

// Issue 3, item 7: a deservice written with plain redis-cli reaches the
// instance through its periodic resync (≤ resync_interval, 500 ms here);
// one written by sipedgectl also publishes on sipedge:events and lands at
// once. The test checks that both paths turn new dialogs into 503 and back,
// and measures the time from the moment Redis applied the write (its
// keyspace notification) to the first 503 a client sees. The figures are
// logged, not judged: `make bench` runs this test with -v and
// BENCHMARKS.md records them.
func TestPropagation_DeserviceFlip_FirstRejectTimes(t *testing.T) {
	const rounds = 5
	c := newCluster(t, twoInstances, []string{"n1"})
	a := c.inst[0]
	c.ctlOK("profiles", "create", "flip", "--name", "flip test", "--servers", "srvA")
	writes := c.watchWrites("sipedge:profile:flip")
	prober := startRejectProber(t, a.sipAddr(), 5*time.Millisecond)

	flip := func(how, status string) {
		switch how {
		case "redis-cli":
			c.writeHash("sipedge:profile:flip", "status", status)
		case "sipedgectl":
			verb := map[string]string{"deservice": "deservice", "normal": "restore"}[status]
			c.ctlOK("profiles", verb, "flip")
		}
	}
	measured := map[string][]time.Duration{}
	for _, how := range []string{"redis-cli", "sipedgectl"} {
		for i := 0; i < rounds; i++ {
			// Quiet start: A admits, no 503 pending.
			waitDeservicedState(t, a, false)
			time.Sleep(150 * time.Millisecond)
			writes.drain()
			drainTimes(prober.first503)

			flip(how, "deservice")
			wrote := writes.next(t, 3*time.Second)
			select {
			case got := <-prober.first503:
				measured[how] = append(measured[how], got.Sub(wrote))
			case <-time.After(3 * time.Second):
				sent, answers := prober.counts()
				t.Fatalf("%s round %d: no 503 within 3 s of the write (sent %d, answers %v)", how, i, sent, answers)
			}
			flip(how, "normal")
		}
	}
	waitDeservicedState(t, a, false)
	for how, ds := range measured {
		t.Logf("deservice by %s → first 503 at the client: %s", how, durStats(ds))
	}
	sent, answers := prober.counts()
	t.Logf("prober: %d REGISTERs sent every 5 ms (the resolution), answers %v", sent, answers)
	if answers[200] == 0 || answers[503] == 0 {
		t.Errorf("prober answers %v: want both 200 (in service) and 503 (deserviced)", answers)
	}
}

// waitDeservicedState waits until s reports deserviced = want.
func waitDeservicedState(t *testing.T, s *sipedge, want bool) {
	t.Helper()
	s.waitInstance(t, 3*time.Second, fmt.Sprintf("deserviced = %v", want), func(d svcStatusDoc) string {
		if d.Instance.Deserviced != want {
			return "not yet"
		}
		return ""
	})
}

// drainTimes discards stamped values.
func drainTimes(ch chan time.Time) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
