package ring

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestBuildSnapshot_Eligibility(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	opts := HealthOptions{HeartbeatTimeout: 5 * time.Second, ProbeInterval: time.Second}
	const noHB = time.Duration(math.MinInt64)
	node := func(name string, weight float64, hbAge time.Duration) Node {
		n := Node{Name: name, Addr: "127.0.0.1:5060", Transport: "udp", Weight: weight, Capable: true}
		if hbAge != noHB {
			n.Heartbeat = now.Add(-hbAge)
		}
		return n
	}
	for _, tc := range []struct {
		name      string
		n         Node
		probeDown bool
		opts      HealthOptions
		healthy   bool
		eligible  bool
		reason    string
	}{
		{"fresh heartbeat", node("n", 100, time.Second), false, opts, true, true, ""},
		{"heartbeat exactly at the timeout", node("n", 100, 5*time.Second), false, opts, true, true, ""},
		{"stale heartbeat excluded", node("n", 100, 5*time.Second+time.Millisecond), false, opts, false, false, ReasonHeartbeatStale},
		{"heartbeat from the future (clock skew) is fresh", node("n", 100, -time.Second), false, opts, true, true, ""},
		{"missing heartbeat included (probes judge)", node("n", 100, noHB), false, opts, true, true, ""},
		{"probe down excluded", node("n", 100, time.Second), true, opts, false, false, ReasonProbeDown},
		{"probe state ignored when probing is off", node("n", 100, noHB), true, HealthOptions{}, true, true, ""},
		{"zero weight excluded but healthy", node("n", 0, time.Second), false, opts, true, false, ReasonZeroWeight},
		{"default heartbeat timeout is 5s", node("n", 100, 6*time.Second), false, HealthOptions{}, false, false, ReasonHeartbeatStale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := BuildSnapshot([]Node{tc.n}, func(string) bool { return !tc.probeDown }, now, tc.opts)
			sts := s.Statuses()
			if len(sts) != 1 {
				t.Fatalf("%d statuses, want 1", len(sts))
			}
			st := sts[0]
			if st.Healthy != tc.healthy || st.Eligible != tc.eligible || st.Reason != tc.reason {
				t.Errorf("healthy=%v eligible=%v reason=%q, want %v %v %q", st.Healthy, st.Eligible, st.Reason,
					tc.healthy, tc.eligible, tc.reason)
			}
			if s.Eligible("n") != tc.eligible || (s.Ring().Len() == 1) != tc.eligible {
				t.Errorf("Eligible=%v ring members %d, want eligible=%v", s.Eligible("n"), s.Ring().Len(), tc.eligible)
			}
			if _, ok := s.Node("n"); !ok {
				t.Error("Node(n) not found though valid")
			}
			if got, ok := s.Lookup("conf-1"); ok != tc.eligible || (ok && got.Name != "n") {
				t.Errorf("Lookup = %v %v", got.Name, ok)
			}
		})
	}
}

func TestBuildSnapshot_SortedAndLookupMatchesRing(t *testing.T) {
	now := time.Now()
	nodes := []Node{{Name: "c", Addr: "h:3", Weight: 100, Capable: true}, {Name: "a", Addr: "h:1", Weight: 100, Capable: true},
		{Name: "b", Addr: "h:2", Weight: 50, Capable: true}, {Name: "d", Addr: "h:4", Weight: 0, Capable: true}}
	s := BuildSnapshot(nodes, nil, now, HealthOptions{})
	var names []string
	for _, st := range s.Statuses() {
		names = append(names, st.Node.Name)
	}
	if !slices.Equal(names, []string{"a", "b", "c", "d"}) {
		t.Errorf("statuses in order %v", names)
	}
	want := New([]Member{{"a", 100}, {"b", 50}, {"c", 100}})
	for i := range 1000 {
		k := confKey(i)
		n, _ := s.Lookup(k)
		w, _ := want.Lookup(k)
		if n.Name != w {
			t.Fatalf("%s: snapshot %s, ring %s", k, n.Name, w)
		}
		if n.Addr != "h:"+map[string]string{"a": "1", "b": "2", "c": "3"}[w] {
			t.Fatalf("%s: node %+v has the wrong address", k, n)
		}
	}
	if s.Version() != 1 || !s.ReadAt().Equal(now) {
		t.Errorf("version %d readAt %v", s.Version(), s.ReadAt())
	}
}

func TestBuild_VersionMovesOnlyWithMembership(t *testing.T) {
	now := time.Now()
	a := Node{Name: "a", Addr: "h:1", Weight: 100, Capable: true, Load: 0.1}
	b := Node{Name: "b", Addr: "h:2", Weight: 100, Capable: true}
	s1 := build(nil, Inputs{Nodes: []Node{a, b}, Now: now})

	a2 := a
	a2.Load, a2.Addr = 0.9, "h:9" // data changes, placement does not
	s2 := build(s1, Inputs{Nodes: []Node{b, a2}, Now: now.Add(time.Second)})
	if s2.Version() != s1.Version() || s2.Ring() != s1.Ring() {
		t.Errorf("version %d -> %d with the same members", s1.Version(), s2.Version())
	}
	if n, _ := s2.Node("a"); n.Addr != "h:9" || n.Load != 0.9 {
		t.Errorf("node data not refreshed: %+v", n)
	}

	a3 := a2
	a3.Weight = 50
	s3 := build(s2, Inputs{Nodes: []Node{a3, b}, Now: now})
	s4 := build(s3, Inputs{Nodes: []Node{a3}, Now: now})
	if s3.Version() != s2.Version()+1 || s4.Version() != s3.Version()+1 {
		t.Errorf("versions %d, %d, %d: want +1 on a weight change and on a removal", s2.Version(), s3.Version(), s4.Version())
	}
}

func TestSnapshot_NilAndUnknown(t *testing.T) {
	var s *Snapshot
	if _, ok := s.Lookup("x"); ok || s.Eligible("x") || s.Version() != 0 || s.Ring().Len() != 0 {
		t.Error("nil snapshot is not empty")
	}
	s = BuildSnapshot(nil, nil, time.Now(), HealthOptions{})
	if _, ok := s.Node("ghost"); ok || s.Eligible("ghost") {
		t.Error("unknown node found")
	}
}

func TestSnapshot_LookupDoesNotAllocate(t *testing.T) {
	s := BuildSnapshot([]Node{{Name: "a", Addr: "h:1", Weight: 100, Capable: true}, {Name: "b", Addr: "h:2", Weight: 100, Capable: true}},
		nil, time.Now(), HealthOptions{})
	if allocs := testing.AllocsPerRun(1000, func() { _, _ = s.Lookup("conf-7") }); allocs != 0 {
		t.Errorf("Snapshot.Lookup allocates %.1f times per call", allocs)
	}
}

// AnyHealthy is true while one node is alive, in the ring or not (out of
// service, weight 0), and false when none is (heartbeats stale) or none
// is known.
func TestSnapshot_AnyHealthy(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	h := HealthOptions{HeartbeatTimeout: 5 * time.Second}
	stale := Node{Name: "n1", Addr: "127.0.0.1:5071", Weight: 1, Heartbeat: now.Add(-time.Minute)}
	zero := Node{Name: "n2", Addr: "127.0.0.1:5072", Weight: 0, Heartbeat: now}
	for _, tc := range []struct {
		name  string
		nodes []Node
		want  bool
	}{
		{"none known", nil, false},
		{"all stale", []Node{stale}, false},
		{"alive, out of the ring", []Node{stale, zero}, true},
		{"alive in the ring", []Node{{Name: "n3", Addr: "127.0.0.1:5073", Weight: 1, Heartbeat: now}}, true},
	} {
		if got := BuildSnapshot(tc.nodes, nil, now, h).AnyHealthy(); got != tc.want {
			t.Errorf("%s: AnyHealthy = %v, want %v", tc.name, got, tc.want)
		}
	}
	var nilSnap *Snapshot
	if nilSnap.AnyHealthy() {
		t.Error("nil snapshot AnyHealthy")
	}
}
