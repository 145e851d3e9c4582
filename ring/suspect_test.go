package ring

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRing_LookupExcluding_IsTheNextOfScores(t *testing.T) {
	r := New([]Member{{"a", 100}, {"b", 100}, {"c", 100}, {"d", 50}, {"z", 0}})
	for i := range 200 {
		key := fmt.Sprintf("conf-%d", i)
		var order []string
		for _, s := range r.Scores(key) {
			if s.Weight > 0 {
				order = append(order, s.Name)
			}
		}
		// Excluding the first k of the score order gives the (k+1)-th.
		for k := range order {
			got, ok := r.LookupExcluding(key, order[:k])
			if !ok || got != order[k] {
				t.Fatalf("%s excluding %v = %q %v, want %q (scores %v)", key, order[:k], got, ok, order[k], order)
			}
		}
		if got, ok := r.LookupExcluding(key, order); ok {
			t.Fatalf("%s excluding every member = %q, want none", key, got)
		}
		if a, _ := r.Lookup(key); a != order[0] {
			t.Fatalf("Lookup %q disagrees with Scores %v", a, order)
		}
	}
}

func TestRing_LookupExcluding_Cases(t *testing.T) {
	three := New([]Member{{"a", 1}, {"b", 1}, {"c", 1}})
	first, _ := three.Lookup("k")
	for _, tc := range []struct {
		name    string
		r       *Ring
		exclude []string
		wantOK  bool
		notIn   []string
	}{
		{"nil ring", nil, nil, false, nil},
		{"no exclusion is Lookup", three, nil, true, nil},
		{"unknown names change nothing", three, []string{"x", "y"}, true, nil},
		{"the winner excluded", three, []string{first}, true, []string{first}},
		{"all but one excluded", three, []string{"a", "b"}, true, []string{"a", "b"}},
		{"all excluded", three, []string{"a", "b", "c"}, false, nil},
		{"weight 0 never chosen, even as the last", New([]Member{{"a", 1}, {"z", 0}}), []string{"a"}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.r.LookupExcluding("k", tc.exclude)
			if ok != tc.wantOK || slices.Contains(tc.notIn, got) {
				t.Fatalf("got %q %v, want ok=%v and not one of %v", got, ok, tc.wantOK, tc.notIn)
			}
			if tc.exclude == nil && ok {
				if want, _ := tc.r.Lookup("k"); got != want {
					t.Fatalf("got %q, Lookup says %q", got, want)
				}
			}
		})
	}
}

func TestRing_LookupExcludingDoesNotAllocate(t *testing.T) {
	r := New([]Member{{"a", 1}, {"b", 1}, {"c", 1}})
	ex := []string{"a"}
	if n := testing.AllocsPerRun(100, func() { r.LookupExcluding("conf-1", ex) }); n != 0 {
		t.Fatalf("%v allocations per LookupExcluding", n)
	}
}

func TestSuspects_HoldAndProbe(t *testing.T) {
	t0 := time.UnixMilli(1_700_000_000_000)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	const hold = 10 * time.Second
	type step struct {
		op      string // mark | probe (sent at `sent`) | check
		at      time.Duration
		sent    time.Duration
		want    bool // mark: fresh; probe: cleared; check: active
		comment string
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"unknown node is not suspect", []step{{op: "check", at: 0, want: false}}},
		{"suspect at once", []step{{op: "mark", at: 0, want: true}, {op: "check", at: 0, want: true}}},
		{"held until just before the hold ends", []step{{op: "mark", at: 0, want: true}, {op: "check", at: hold - time.Millisecond, want: true}}},
		{"free when the hold ends", []step{{op: "mark", at: 0, want: true}, {op: "check", at: hold, want: false}}},
		{"a second mark is not fresh and restarts the hold", []step{
			{op: "mark", at: 0, want: true}, {op: "mark", at: 5 * time.Second, want: false},
			{op: "check", at: hold + time.Second, want: true}, {op: "check", at: 15 * time.Second, want: false}}},
		{"a mark after the hold is fresh again", []step{{op: "mark", at: 0, want: true}, {op: "mark", at: hold, want: true}}},
		{"a good probe sent after the mark clears it", []step{
			{op: "mark", at: 0, want: true}, {op: "probe", at: 2 * time.Second, sent: time.Second, want: true},
			{op: "check", at: 2 * time.Second, want: false}}},
		{"a probe sent before the mark keeps it", []step{
			{op: "mark", at: time.Second, want: true}, {op: "probe", at: 2 * time.Second, sent: 0, want: false},
			{op: "check", at: 2 * time.Second, want: true}}},
		{"a probe of a node never marked clears nothing", []step{{op: "probe", at: time.Second, sent: 0, want: false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSuspects(hold)
			for i, st := range tc.steps {
				var got bool
				switch st.op {
				case "mark":
					got = s.mark("n1", at(st.at))
				case "probe":
					got = s.probed("n1", at(st.sent), at(st.at))
				case "check":
					got = s.active("n1", at(st.at))
				}
				if got != st.want {
					t.Fatalf("step %d %s at %v: %v, want %v", i, st.op, st.at, got, st.want)
				}
			}
		})
	}
	t.Run("default hold", func(t *testing.T) {
		if s := newSuspects(0); s.hold != DefaultSuspectHold {
			t.Fatalf("hold %v", s.hold)
		}
	})
	t.Run("forgotten node is no longer suspect", func(t *testing.T) {
		s := newSuspects(hold)
		s.mark("n1", t0)
		s.mark("n2", t0)
		s.retain(map[string]bool{"n2": true})
		if s.active("n1", t0) || !s.active("n2", t0) || s.count(t0) != 1 {
			t.Fatal("retain kept the wrong nodes")
		}
	})
}

func TestBuildSnapshot_SuspectNodes(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	opts := HealthOptions{ProbeInterval: time.Second}
	nodes := []Node{
		{Name: "a", Addr: "127.0.0.1:1", Weight: 100, Capable: true, Site: "s"},
		{Name: "b", Addr: "127.0.0.1:2", Weight: 100, Capable: true, Site: "s"},
		{Name: "c", Addr: "127.0.0.1:3", Weight: 100, Capable: true, Site: "s"},
	}
	for _, tc := range []struct {
		name      string
		suspect   []string
		probeDown []string
		eligible  []string
		reasons   map[string]string
	}{
		{"none suspect", nil, nil, []string{"a", "b", "c"}, nil},
		{"one suspect leaves the ring and is not healthy", []string{"b"}, nil, []string{"a", "c"},
			map[string]string{"b": ReasonSuspect}},
		{"two suspect", []string{"a", "b"}, nil, []string{"c"}, map[string]string{"a": ReasonSuspect, "b": ReasonSuspect}},
		{"probe down wins over suspect", []string{"a"}, []string{"a"}, []string{"b", "c"}, map[string]string{"a": ReasonProbeDown}},
		{"suspicion never empties the ring", []string{"a", "b", "c"}, nil, []string{"a", "b", "c"}, nil},
		{"the last good node down: suspects stay in", []string{"a", "b"}, []string{"c"}, []string{"a", "b"},
			map[string]string{"c": ReasonProbeDown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := BuildSnapshotFrom(Inputs{Nodes: nodes, Now: now, Health: opts,
				ProbeUp: func(n string) bool { return !slices.Contains(tc.probeDown, n) },
				Suspect: func(n string) bool { return slices.Contains(tc.suspect, n) }})
			var eligible []string
			for _, st := range s.Statuses() {
				if st.Eligible {
					eligible = append(eligible, st.Node.Name)
				}
				if want := tc.reasons[st.Node.Name]; st.Reason != want {
					t.Errorf("%s reason %q, want %q", st.Node.Name, st.Reason, want)
				}
				if st.Reason == ReasonSuspect && (st.Healthy || s.Healthy(st.Node.Name)) {
					t.Errorf("suspect %s healthy: a sticky conference would stay on it", st.Node.Name)
				}
			}
			if !slices.Equal(eligible, tc.eligible) {
				t.Fatalf("eligible %v, want %v", eligible, tc.eligible)
			}
			for i := range 50 {
				key := fmt.Sprintf("conf-%d", i)
				n, ok := s.Lookup(key)
				if !ok || !slices.Contains(tc.eligible, n.Name) {
					t.Fatalf("Lookup(%s) = %q %v", key, n.Name, ok)
				}
				next, ok := s.LookupExcluding(key, []string{n.Name})
				if len(tc.eligible) > 1 && (!ok || next.Name == n.Name || !slices.Contains(tc.eligible, next.Name)) {
					t.Fatalf("LookupExcluding(%s, %s) = %q %v", key, n.Name, next.Name, ok)
				}
			}
		})
	}
}

func TestWatcher_MarkSuspect_OutAtOnceBackOnGoodProbeOrHold(t *testing.T) {
	t.Run("back at the hold end (no probing)", func(t *testing.T) {
		h := newHarness(t, WatcherOptions{ResyncInterval: time.Hour, Health: HealthOptions{SuspectHold: 5 * time.Second}}, nil)
		h.put("n1")
		h.put("n2")
		if err := h.w.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		if h.w.MarkSuspect("nope") {
			t.Error("unknown node marked")
		}
		if !h.w.MarkSuspect("n2") {
			t.Fatal("first mark not fresh")
		}
		// No reload, no probe: the mark itself rebuilt the snapshot.
		s := h.w.Snapshot()
		if s.Eligible("n2") || s.Healthy("n2") || !s.Eligible("n1") {
			t.Fatalf("after the mark: %+v", s.Statuses())
		}
		if h.w.MarkSuspect("n2") {
			t.Error("second mark counted as fresh")
		}
		if got := testutil.ToFloat64(h.w.m.suspectMarks); got != 1 {
			t.Errorf("suspect marks %v, want 1", got)
		}
		if got := testutil.ToFloat64(h.w.m.suspectNodes); got != 1 {
			t.Errorf("suspect nodes %v, want 1", got)
		}
		if n := len(h.log.lines(t, "media node suspect: it failed a call; out of the ring until a good probe or the hold ends")); n != 1 {
			t.Errorf("%d suspect log lines, want 1", n)
		}
		h.now.Add((5 * time.Second).Milliseconds())
		if err := h.w.reload(t.Context()); err != nil {
			t.Fatal(err)
		}
		if !h.w.Snapshot().Eligible("n2") {
			t.Fatal("n2 still out after the hold")
		}
	})
	t.Run("back at the next good probe", func(t *testing.T) {
		p := &fakePinger{}
		h := newHarness(t, WatcherOptions{ResyncInterval: time.Hour, Health: HealthOptions{
			ProbeInterval: 10 * time.Millisecond, ProbeTimeout: 10 * time.Millisecond, SuspectHold: time.Hour}}, p)
		h.put("n1")
		h.put("n2")
		if err := h.w.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		h.w.MarkSuspect("n2")
		if h.w.Snapshot().Eligible("n2") {
			t.Fatal("n2 in the ring after the mark")
		}
		h.now.Add(1) // the probe is sent after the mark
		h.w.probeRound(t.Context())
		if !h.w.Snapshot().Eligible("n2") {
			t.Fatalf("n2 still out after a good probe: %+v", h.w.Snapshot().Statuses())
		}
		p.set("n2", "fail")
		h.w.MarkSuspect("n2")
		h.now.Add(1)
		h.w.probeRound(t.Context())
		if h.w.Snapshot().Eligible("n2") {
			t.Fatal("a failed probe cleared the suspicion")
		}
	})
}

// BenchmarkLookupExcluding is the ring lookup of a retry, next to Lookup's.
func BenchmarkLookupExcluding(b *testing.B) {
	ms := make([]Member, 8)
	for i := range ms {
		ms[i] = Member{Name: fmt.Sprintf("node-%d", i), Weight: 100}
	}
	r := New(ms)
	first, _ := r.Lookup("conf-42")
	ex := []string{first}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.LookupExcluding("conf-42", ex)
	}
}
