package ring

import (
	"math"
	"testing"
	"time"
)

var t0 = time.UnixMilli(1_700_000_000_000)

// mnode is a valid, healthy, in-service node of site "a", as ParseNode
// would return it for a hash with just addr, site and server.
func mnode(name string, opts ...func(*Node)) Node {
	n := Node{Name: name, Addr: "127.0.0.1:5060", Transport: "udp", Site: "a", Server: "srv-" + name,
		Weight: 100, Capable: true, Load: 0.3} // no heartbeat: probes judge, and probing is off
	for _, o := range opts {
		o(&n)
	}
	return n
}

func maint(n *Node)                      { n.Maintenance = true }
func incapable(n *Node)                  { n.Capable = false }
func stale(n *Node)                      { n.Heartbeat = t0.Add(-time.Minute) }
func site(s string) func(*Node)          { return func(n *Node) { n.Site = s } }
func weight(w float64) func(*Node)       { return func(n *Node) { n.Weight = w } }
func drainAt(t time.Time) func(*Node)    { return func(n *Node) { n.DrainStarted = t } }
func restoredAt(t time.Time) func(*Node) { return func(n *Node) { n.RestoredAt = t } }

func status(t *testing.T, s *Snapshot, name string) NodeStatus {
	t.Helper()
	st, ok := s.Status(name)
	if !ok {
		t.Fatalf("no status for %q", name)
	}
	return st
}

func TestJudge_OutOfServiceReasons(t *testing.T) {
	policy := Policy{DeservicedServers: map[string]string{"srv-n": "p1", "": "p-empty"}}
	for _, tc := range []struct {
		name   string
		n      Node
		reason string // OutReason; "" = in service
	}{
		{"in service", mnode("n", func(n *Node) { n.Server = "srv-other" }), ""},
		{"no server is never deserviced", mnode("n", func(n *Node) { n.Server = "" }), ""},
		{"deserviced by profile", mnode("n"), "deserviced by profile p1"},
		{"manual maintenance", mnode("n", maint, func(n *Node) { n.Server = "srv-other" }), ReasonManualMaintenance},
		{"capable=0 with maintenance=0 is forced", mnode("n", incapable, func(n *Node) { n.Server = "" }), ReasonForcedMaintenance},
		{"capable=0 with maintenance=1 is forced", mnode("n", incapable, maint, func(n *Node) { n.Server = "" }), ReasonForcedMaintenance},
		{"capable=0 outranks a profile", mnode("n", incapable), ReasonForcedMaintenance},
		{"a profile outranks the manual flag", mnode("n", maint), "deserviced by profile p1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, calls := range []int{0, 3} {
				// A spare node of the same site in normal service, so the
				// node under test is not kept active.
				s := BuildSnapshotFrom(Inputs{Nodes: []Node{tc.n, mnode("spare")}, Now: t0, Policy: policy,
					Calls: map[string]int{"n": calls, "spare": 7}})
				st := status(t, s, "n")
				if st.OutReason != tc.reason || st.InService != (tc.reason == "") || st.Calls != calls {
					t.Fatalf("calls=%d: out reason %q in service %v calls %d, want %q", calls, st.OutReason, st.InService, st.Calls, tc.reason)
				}
				wantState, wantLoad := StateNormal, 0.3
				switch {
				case tc.reason != "" && calls > 0:
					wantState, wantLoad = StateDraining, 1
				case tc.reason != "":
					wantState, wantLoad = StateMaintenance, 1
				}
				if st.State != wantState || st.ReportedLoad != wantLoad {
					t.Errorf("calls=%d: state %q load %v, want %q %v", calls, st.State, st.ReportedLoad, wantState, wantLoad)
				}
				if tc.reason == "" {
					if !st.Eligible || st.Reason != "" || st.EffectiveWeight != 100 {
						t.Errorf("in service but %+v", st)
					}
					continue
				}
				if !st.Healthy || st.Eligible || st.KeptActive || st.Reason != tc.reason || st.EffectiveWeight != 0 {
					t.Errorf("out of service but %+v", st)
				}
				if s.Eligible("n") || s.Ring().Len() != 1 {
					t.Errorf("out-of-service node in the ring: %v", s.Ring().Members())
				}
				if !s.Healthy("n") {
					t.Error("Healthy(n) false: sticky conferences would leave a healthy node")
				}
			}
		})
	}
}

func TestBuild_LastOnesOfSiteStay(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes []Node
		kept  []string // out-of-service nodes kept active; every other out-of-service node is out of the ring
	}{
		{"another node of the site serves: not kept",
			[]Node{mnode("a1", maint), mnode("a2")}, nil},
		{"whole site out: all its healthy nodes kept",
			[]Node{mnode("a1", maint), mnode("a2", incapable)}, []string{"a1", "a2"}},
		{"the only normal node is unhealthy: kept",
			[]Node{mnode("a1", maint), mnode("a2", stale)}, []string{"a1"}},
		{"the only normal node has weight 0: kept",
			[]Node{mnode("a1", maint), mnode("a2", weight(0))}, []string{"a1"}},
		{"an unhealthy out-of-service node is not kept",
			[]Node{mnode("a1", maint, stale), mnode("a2", maint)}, []string{"a2"}},
		{"an out-of-service node of weight 0 is not kept",
			[]Node{mnode("a1", maint, weight(0)), mnode("a2", maint)}, []string{"a2"}},
		// Per site, not across sites: site a's normal node neither releases
		// site b's last node nor is b's keeping carried over to a's node.
		{"sites judged apart: b's last node kept though a serves, a's out node not",
			[]Node{mnode("a1"), mnode("a2", maint), mnode("b1", maint, site("b"))}, []string{"b1"}},
		{"sites judged apart: b serves, a's last nodes kept",
			[]Node{mnode("a1", maint), mnode("b1", site("b")), mnode("b2", maint, site("b"))}, []string{"a1"}},
		{"nodes without a site form one site",
			[]Node{mnode("x1", maint, site("")), mnode("x2", maint, site(""))}, []string{"x1", "x2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := BuildSnapshotFrom(Inputs{Nodes: tc.nodes, Now: t0, Calls: map[string]int{"a1": 2}})
			kept := map[string]bool{}
			for _, n := range tc.kept {
				kept[n] = true
			}
			for _, st := range s.Statuses() {
				name := st.Node.Name
				switch {
				case kept[name]:
					if !st.KeptActive || !st.Eligible || st.Reason != ReasonKeptActive || st.EffectiveWeight != st.Node.Weight ||
						st.InService || st.OutReason == "" || st.ReportedLoad != 1 {
						t.Errorf("%s should be kept active: %+v", name, st)
					}
				case st.InService:
					if st.KeptActive {
						t.Errorf("%s in service yet kept active", name)
					}
				default:
					if st.KeptActive || st.Eligible {
						t.Errorf("%s should be out of the ring: %+v", name, st)
					}
				}
				if st.Eligible != s.Eligible(name) {
					t.Errorf("%s: status and Eligible disagree", name)
				}
			}
			if st, _ := s.Status("a1"); kept["a1"] && st.State != StateDraining {
				t.Errorf("a kept node keeps its service state: %q, want draining (2 calls)", st.State)
			}
		})
	}
}

func TestBuild_KeptNodeTakesCallsAndItsDrainDoesNotExpire(t *testing.T) {
	s := BuildSnapshotFrom(Inputs{Nodes: []Node{mnode("a1", maint, drainAt(t0.Add(-3*time.Hour)))}, Now: t0,
		Policy: Policy{DrainTimeout: time.Hour}, Calls: map[string]int{"a1": 4}})
	st := status(t, s, "a1")
	if !st.KeptActive || st.DrainExpired || st.State != StateDraining {
		t.Errorf("%+v: want kept active, draining, drain not expired", st)
	}
	if n, ok := s.Lookup("conf-1"); !ok || n.Name != "a1" {
		t.Errorf("Lookup = %q %v, want the kept node", n.Name, ok)
	}
}

func TestBuild_SlowStartEffectiveWeight(t *testing.T) {
	const window = time.Minute
	for _, tc := range []struct {
		name string
		n    Node
		slow time.Duration
		want float64
	}{
		{"just restored: 0", mnode("n", restoredAt(t0)), window, 0},
		{"half way: half", mnode("n", restoredAt(t0.Add(-window/2))), window, 50},
		{"a quarter way, weight 40: 10", mnode("n", weight(40), restoredAt(t0.Add(-window/4))), window, 10},
		{"window over: full", mnode("n", restoredAt(t0.Add(-window))), window, 100},
		{"long ago: full", mnode("n", restoredAt(t0.Add(-24*time.Hour))), window, 100},
		{"never restored (new node): full", mnode("n"), window, 100},
		{"slow start off: full at once", mnode("n", restoredAt(t0)), 0, 100},
		{"restore not yet recorded (drain_started still set): 0", mnode("n", drainAt(t0.Add(-time.Hour))), window, 0},
		{"restored_at ahead of this clock: 0", mnode("n", restoredAt(t0.Add(time.Second))), window, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := BuildSnapshotFrom(Inputs{Nodes: []Node{tc.n, mnode("other")}, Now: t0, Policy: Policy{SlowStart: tc.slow}})
			st := status(t, s, "n")
			if math.Abs(st.EffectiveWeight-tc.want) > 1e-9 || !st.Eligible || st.State != StateNormal {
				t.Errorf("effective weight %v eligible %v state %q, want %v", st.EffectiveWeight, st.Eligible, st.State, tc.want)
			}
			var ringW float64 = -1
			for _, m := range s.Ring().Members() {
				if m.Name == "n" {
					ringW = m.Weight
				}
			}
			if math.Abs(ringW-tc.want) > 1e-9 {
				t.Errorf("ring weight %v, want %v", ringW, tc.want)
			}
		})
	}
}

func TestBuild_SlowStartAloneTakesEverything(t *testing.T) {
	// A lone node at the very start of its ramp must not leave a gap of
	// 503s: with nobody else to take calls it takes them all.
	s := BuildSnapshotFrom(Inputs{Nodes: []Node{mnode("n", restoredAt(t0))}, Now: t0, Policy: Policy{SlowStart: time.Minute}})
	if n, ok := s.Lookup("conf-1"); !ok || n.Name != "n" {
		t.Errorf("Lookup = %q %v, want the lone ramping node", n.Name, ok)
	}
	// With a kept-active node around, the ramping node stays at 0.
	s = BuildSnapshotFrom(Inputs{Nodes: []Node{mnode("n", restoredAt(t0)), mnode("m", maint, site("b"))}, Now: t0,
		Policy: Policy{SlowStart: time.Minute}})
	if st := status(t, s, "n"); st.EffectiveWeight != 0 || !status(t, s, "m").KeptActive {
		t.Errorf("n at %v, m kept %v", st.EffectiveWeight, status(t, s, "m").KeptActive)
	}
}

func TestSlowStart_ShareGrowsAcrossTheWindow(t *testing.T) {
	const (
		n      = 3
		keys   = 20_000
		window = time.Minute
	)
	restored := t0.Add(-time.Hour) // set per step below
	nodes := func() []Node {
		return []Node{mnode("back", restoredAt(restored)), mnode("n1"), mnode("n2")}
	}
	var prev map[string]string // key -> node at the previous step
	prevShare := -1.0
	for _, step := range []struct {
		frac     float64
		min, max float64
	}{
		{0.0, 0, 0},
		{0.1, 0.001, 1.0 / n / 3}, // less than a third of its full share
		{0.25, 0, 1},
		{0.5, 0, 1},
		{0.75, 0, 1},
		{1.0, 1.0 / n * 0.95, 1.0 / n * 1.05},
	} {
		now := t0
		restored = now.Add(-time.Duration(step.frac * float64(window)))
		s := BuildSnapshotFrom(Inputs{Nodes: nodes(), Now: now, Policy: Policy{SlowStart: window}})
		cur := make(map[string]string, keys)
		got := 0
		for i := range keys {
			k := confKey(i)
			node, ok := s.Lookup(k)
			if !ok {
				t.Fatalf("at %v: %s not placed", step.frac, k)
			}
			cur[k] = node.Name
			if node.Name == "back" {
				got++
			}
			// Keys only ever move to the returning node.
			if prev != nil && prev[k] != node.Name && node.Name != "back" {
				t.Fatalf("at %v: %s moved %s -> %s", step.frac, k, prev[k], node.Name)
			}
		}
		share := float64(got) / keys
		t.Logf("at %3.0f%% of the window: %.4f of the keys", step.frac*100, share)
		if share < step.min || share > step.max {
			t.Errorf("at %v of the window the returning node has %.4f of the keys, want %.4f..%.4f", step.frac, share, step.min, step.max)
		}
		if share < prevShare || (step.frac > 0 && share == prevShare) {
			t.Errorf("share did not grow: %.4f after %.4f", share, prevShare)
		}
		prev, prevShare = cur, share
	}
}

func TestBuild_DrainExpired(t *testing.T) {
	const timeout = 2 * time.Hour
	for _, tc := range []struct {
		name    string
		n       Node
		calls   int
		timeout time.Duration
		want    bool
	}{
		{"draining past the timeout", mnode("n", maint, drainAt(t0.Add(-timeout-time.Millisecond))), 3, timeout, true},
		{"draining exactly at the timeout", mnode("n", maint, drainAt(t0.Add(-timeout))), 3, timeout, false},
		{"draining within the timeout", mnode("n", maint, drainAt(t0.Add(-time.Minute))), 3, timeout, false},
		{"no calls left: maintenance, nothing to end", mnode("n", maint, drainAt(t0.Add(-3*timeout))), 0, timeout, false},
		{"timeout 0 never expires", mnode("n", maint, drainAt(t0.Add(-1000*time.Hour))), 3, 0, false},
		{"drain start not recorded yet", mnode("n", maint), 3, timeout, false},
		{"back in service", mnode("n", drainAt(t0.Add(-3*timeout))), 3, timeout, false},
		{"unhealthy draining node still expires", mnode("n", maint, stale, drainAt(t0.Add(-3*timeout))), 3, timeout, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := BuildSnapshotFrom(Inputs{Nodes: []Node{tc.n, mnode("spare")}, Now: t0,
				Policy: Policy{DrainTimeout: tc.timeout}, Calls: map[string]int{"n": tc.calls}})
			if st := status(t, s, "n"); st.DrainExpired != tc.want {
				t.Errorf("DrainExpired = %v, want %v (%+v)", st.DrainExpired, tc.want, st)
			}
		})
	}
}

func TestSnapshot_HealthyVsEligible(t *testing.T) {
	s := BuildSnapshotFrom(Inputs{Nodes: []Node{mnode("ok"), mnode("maint", maint), mnode("dead", stale),
		mnode("deadmaint", stale, maint), mnode("w0", weight(0))}, Now: t0})
	for _, tc := range []struct {
		name              string
		healthy, eligible bool
		reason            string
	}{
		{"ok", true, true, ""},
		{"maint", true, false, ReasonManualMaintenance},
		{"dead", false, false, ReasonHeartbeatStale},
		{"deadmaint", false, false, ReasonHeartbeatStale},
		{"w0", true, false, ReasonZeroWeight},
		{"ghost", false, false, ""},
	} {
		st, ok := s.Status(tc.name)
		if s.Healthy(tc.name) != tc.healthy || s.Eligible(tc.name) != tc.eligible || st.Reason != tc.reason ||
			ok != (tc.name != "ghost") || st.Healthy != tc.healthy {
			t.Errorf("%s: Healthy %v Eligible %v status %+v (found %v), want %v %v %q",
				tc.name, s.Healthy(tc.name), s.Eligible(tc.name), st, ok, tc.healthy, tc.eligible, tc.reason)
		}
	}
	if st := status(t, s, "deadmaint"); st.OutReason != ReasonManualMaintenance || st.State != StateMaintenance {
		t.Errorf("an unhealthy node still shows its service state: %+v", st)
	}
	var nilSnap *Snapshot
	if _, ok := nilSnap.Status("ok"); ok || nilSnap.Healthy("ok") {
		t.Error("nil snapshot knows a node")
	}
}

func TestBuild_VersionFollowsEffectiveWeight(t *testing.T) {
	in := Inputs{Nodes: []Node{mnode("back", restoredAt(t0)), mnode("other")}, Now: t0, Policy: Policy{SlowStart: 10 * time.Second}}
	s := build(nil, in)
	for i := 1; i <= 12; i++ {
		in.Now = t0.Add(time.Duration(i) * time.Second)
		prev := s
		s = build(prev, in)
		ramping := i <= 10
		if moved := s.Version() != prev.Version(); moved != ramping {
			t.Errorf("at +%ds: version %d -> %d; want a change only while ramping", i, prev.Version(), s.Version())
		}
	}
	// Calls and load do not move placement.
	prev := s
	in.Calls = map[string]int{"back": 9}
	in.Nodes[1].Load = 0.9
	if s = build(prev, in); s.Version() != prev.Version() || s.Ring() != prev.Ring() {
		t.Error("version moved on calls and load alone")
	}
}
