package ring

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestExpiredDrains(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	const timeout = time.Minute
	out := func(name string, calls int, since time.Duration) NodeStatus {
		n := Node{Name: name}
		if since >= 0 {
			n.DrainStarted = now.Add(-since)
		}
		return NodeStatus{Node: n, Calls: calls, OutReason: "deserviced"}
	}
	kept := out("kept", 3, 2*time.Minute)
	kept.KeptActive = true
	inService := out("normal", 3, 2*time.Minute)
	inService.InService, inService.OutReason = true, ""
	for _, tc := range []struct {
		name     string
		statuses []NodeStatus
		timeout  time.Duration
		want     []string
	}{
		{"drain past the timeout", []NodeStatus{out("a", 2, 61*time.Second)}, timeout, []string{"a"}},
		{"drain exactly at the timeout", []NodeStatus{out("a", 2, time.Minute)}, timeout, nil},
		{"drain within the timeout", []NodeStatus{out("a", 2, 30*time.Second)}, timeout, nil},
		{"no calls left: maintenance, nothing to end", []NodeStatus{out("a", 0, time.Hour)}, timeout, nil},
		{"drain start unknown", []NodeStatus{out("a", 2, -1)}, timeout, nil},
		{"drain_timeout 0 never ends calls", []NodeStatus{out("a", 2, time.Hour)}, 0, nil},
		{"in service", []NodeStatus{inService}, timeout, nil},
		{"kept active as the last of its site", []NodeStatus{kept}, timeout, nil},
		{"several nodes, in order", []NodeStatus{out("a", 1, time.Hour), out("b", 1, time.Second), out("c", 1, 2*time.Minute)},
			timeout, []string{"a", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExpiredDrains(tc.statuses, tc.timeout, now); !slices.Equal(got, tc.want) {
				t.Fatalf("ExpiredDrains = %v, want %v", got, tc.want)
			}
		})
	}
}

// The snapshot and the enforcer judge a drain by the same rule.
func TestExpiredDrains_AgreesWithSnapshot(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	for _, since := range []time.Duration{0, 30 * time.Second, 61 * time.Second, time.Hour} {
		n := Node{Name: "a", Addr: "127.0.0.1:5060", Transport: "udp", Weight: 1, Capable: false, DrainStarted: now.Add(-since)}
		b := Node{Name: "b", Addr: "127.0.0.1:5061", Transport: "udp", Weight: 1, Capable: true}
		snap := BuildSnapshotFrom(Inputs{Nodes: []Node{n, b}, Now: now, Policy: Policy{DrainTimeout: time.Minute},
			Calls: map[string]int{"a": 2}})
		st, _ := snap.Status("a")
		got := len(ExpiredDrains(snap.Statuses(), time.Minute, now)) == 1
		if got != st.DrainExpired {
			t.Fatalf("drain for %s: ExpiredDrains %v, snapshot DrainExpired %v", since, got, st.DrainExpired)
		}
	}
}

type fakeTicker struct{ c chan time.Time }

func (f fakeTicker) C() <-chan time.Time { return f.c }
func (f fakeTicker) Stop()               {}

type drainPolicy struct {
	bye     bool
	timeout time.Duration
}

func (p drainPolicy) NodePolicy() Policy { return Policy{DrainTimeout: p.timeout} }
func (p drainPolicy) DrainBye() bool     { return p.bye }

type staticSnapshot struct{ s *Snapshot }

func (s staticSnapshot) Snapshot() *Snapshot { return s.s }

type endLog struct {
	mu    sync.Mutex
	calls []string // node/reason
	done  chan struct{}
}

func (e *endLog) end(_ context.Context, node, reason string) int {
	e.mu.Lock()
	e.calls = append(e.calls, node+"/"+reason)
	e.mu.Unlock()
	e.done <- struct{}{}
	return 2
}

func TestDrainEnforcer_EndsCallsOnExpiredDrainsEveryTick(t *testing.T) {
	defer goleak.VerifyNone(t)
	start := time.UnixMilli(1_700_000_000_000)
	now := start
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	n := Node{Name: "a", Addr: "127.0.0.1:5060", Transport: "udp", Weight: 1, Capable: false, DrainStarted: start}
	b := Node{Name: "b", Addr: "127.0.0.1:5061", Transport: "udp", Weight: 1, Capable: true}
	snap := BuildSnapshotFrom(Inputs{Nodes: []Node{n, b}, Now: start, Policy: Policy{DrainTimeout: time.Minute},
		Calls: map[string]int{"a": 2}})

	for _, tc := range []struct {
		name  string
		bye   bool
		after time.Duration
		want  []string
	}{
		{"bye, before the timeout", true, 59 * time.Second, nil},
		{"bye, past the timeout", true, 61 * time.Second, []string{"a/drain timeout"}},
		{"keep, past the timeout", false, time.Hour, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			now = start.Add(tc.after)
			mu.Unlock()
			tick := fakeTicker{c: make(chan time.Time)}
			var every time.Duration
			ends := &endLog{done: make(chan struct{}, 8)}
			d := NewDrainEnforcer(staticSnapshot{snap}, drainPolicy{bye: tc.bye, timeout: time.Minute}, ends.end,
				DrainOptions{Every: 3 * time.Second, Now: clock,
					NewTicker: func(d time.Duration) Ticker { every = d; return tick }}, zerolog.Nop())
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { d.Run(ctx); close(done) }()
			for range 2 {
				tick.c <- now // unbuffered: the loop took the tick
			}
			cancel()
			<-done
			if every != 3*time.Second {
				t.Fatalf("ticker every %s, want 3s", every)
			}
			ends.mu.Lock()
			defer ends.mu.Unlock()
			var want []string
			for range 2 { // once per tick
				want = append(want, tc.want...)
			}
			if !slices.Equal(ends.calls, want) {
				t.Fatalf("ended %v, want %v", ends.calls, want)
			}
		})
	}
}

func TestDrainEnforcer_CheckCountsEndedCalls(t *testing.T) {
	start := time.UnixMilli(1_700_000_000_000)
	var nodes []Node
	calls := map[string]int{}
	for _, name := range []string{"a", "b"} {
		nodes = append(nodes, Node{Name: name, Addr: "127.0.0.1:5060", Transport: "udp", Weight: 1, DrainStarted: start})
		calls[name] = 1
	}
	nodes = append(nodes, Node{Name: "c", Addr: "127.0.0.1:5062", Transport: "udp", Weight: 1, Capable: true})
	snap := BuildSnapshotFrom(Inputs{Nodes: nodes, Now: start, Calls: calls})
	ends := &endLog{done: make(chan struct{}, 8)}
	d := NewDrainEnforcer(staticSnapshot{snap}, drainPolicy{bye: true, timeout: time.Second}, ends.end,
		DrainOptions{Now: func() time.Time { return start.Add(time.Minute) }}, zerolog.Nop())
	if n := d.Check(context.Background()); n != 4 {
		t.Fatalf("Check ended %d calls, want 4 (2 on each of a and b)", n)
	}
}
