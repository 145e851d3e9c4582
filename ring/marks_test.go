package ring

import (
	"testing"
	"time"
)

// A step of recordTransitions: the node as a contract snapshot read it
// (nil: the node is gone from the snapshot), whether that snapshot may
// predate the watcher's last write (stale: its version is up to the mark's
// upTo) or was read after it, and what must follow.
type markStep struct {
	name      string
	read      *Node
	stale     bool
	now       time.Time
	cleared   bool      // drain_started deleted by hand before the step
	scripts   int64     // transition scripts run by this step
	drain     time.Time // DrainStarted the reload goes on with
	restored  time.Time // RestoredAt the reload goes on with
	keepsMark bool      // the watcher still holds a mark for n1 afterwards
}

func TestRecordTransitions_OwnWritesTakenAsTrueUntilReadBack(t *testing.T) {
	t1, t2 := t0.Add(time.Second), t0.Add(2*time.Second)
	out := func(drain time.Time) *Node {
		return &Node{Name: "n1", Capable: true, Maintenance: true, DrainStarted: drain}
	}
	in := func(drain, restored time.Time) *Node {
		return &Node{Name: "n1", Capable: true, DrainStarted: drain, RestoredAt: restored}
	}
	var zero time.Time
	cases := []struct {
		name         string
		drainInRedis time.Time // drain_started in Redis before the first step
		steps        []markStep
	}{
		{name: "going out is written once, however many stale reads follow", steps: []markStep{
			{name: "out, nothing recorded", read: out(zero), stale: true, now: t0, scripts: 1, drain: t0, keepsMark: true},
			{name: "stale read without drain_started", read: out(zero), stale: true, now: t1, drain: t0, keepsMark: true},
			{name: "another stale read", read: out(zero), stale: true, now: t2, drain: t0, keepsMark: true},
			{name: "read back", read: out(t0), now: t2, drain: t0},
			{name: "steady", read: out(t0), now: t2, drain: t0},
		}},
		{name: "a fresh read that lost drain_started writes it again", steps: []markStep{
			{name: "out, nothing recorded", read: out(zero), stale: true, now: t0, scripts: 1, drain: t0, keepsMark: true},
			{name: "fresh read without it (cleared by hand)", read: out(zero), cleared: true, now: t1, scripts: 1, drain: t1, keepsMark: true},
		}},
		{name: "a return read stale is still a return", drainInRedis: t0, steps: []markStep{
			{name: "back in service", read: in(t0, zero), stale: true, now: t1, scripts: 1, restored: t1, keepsMark: true},
			{name: "stale read with drain_started still set", read: in(t0, zero), stale: true, now: t2, restored: t1, keepsMark: true},
			{name: "read back", read: in(zero, t1), now: t2, restored: t1},
			{name: "steady", read: in(zero, t1), now: t2, restored: t1},
		}},
		{name: "out and back while reads are stale", steps: []markStep{
			{name: "out", read: out(zero), stale: true, now: t0, scripts: 1, drain: t0, keepsMark: true},
			{name: "back, read before the drain landed", read: in(zero, zero), stale: true, now: t1, scripts: 1, restored: t1, keepsMark: true},
			{name: "read back", read: in(zero, t1), now: t2, restored: t1},
		}},
		{name: "the mark of a removed node goes", steps: []markStep{
			{name: "out", read: out(zero), stale: true, now: t0, scripts: 1, drain: t0, keepsMark: true},
			{name: "node removed", read: nil, stale: true, now: t1},
			// Without its mark the stale read is taken as it is: the script
			// runs (and keeps the first time in Redis).
			{name: "node back, read stale", read: out(zero), stale: true, now: t2, scripts: 1, drain: t2, keepsMark: true},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, WatcherOptions{}, nil)
			writes := &writeCounter{}
			h.rdb.AddHook(writes)
			h.put("n1")
			if !tc.drainInRedis.IsZero() {
				h.mr.HSet(tk.Node("n1"), "drain_started", ms(tc.drainInRedis))
			}
			// The watcher's source is not running: every mark it notes has
			// the same upTo, so a stale read is that version, a fresh one
			// the next.
			upTo := h.w.src.Snapshot().Version + 1
			for _, st := range tc.steps {
				if st.cleared {
					h.mr.HDel(tk.Node("n1"), "drain_started")
				}
				version := upTo + 1
				if st.stale {
					version = upTo
				}
				var nodes []Node
				if st.read != nil {
					nodes = []Node{*st.read}
				}
				before := writes.n.Load()
				if err := h.w.recordTransitions(t.Context(), nodes, Policy{}, st.now, version); err != nil {
					t.Fatalf("step %q: %v", st.name, err)
				}
				if n := writes.n.Load() - before; n != st.scripts {
					t.Errorf("step %q: %d transition scripts run, want %d", st.name, n, st.scripts)
				}
				if st.read != nil {
					if got := nodes[0].DrainStarted; !got.Equal(st.drain) {
						t.Errorf("step %q: DrainStarted %v, want %v", st.name, got, st.drain)
					}
					if got := nodes[0].RestoredAt; !got.Equal(st.restored) {
						t.Errorf("step %q: RestoredAt %v, want %v", st.name, got, st.restored)
					}
				}
				h.w.markMu.Lock()
				_, marked := h.w.marked["n1"]
				h.w.markMu.Unlock()
				if marked != st.keepsMark {
					t.Errorf("step %q: mark held %v, want %v", st.name, marked, st.keepsMark)
				}
				// What the scripts left in Redis is what a fresh read sees.
				if st.read != nil && !st.stale {
					if got, want := h.mr.HGet(tk.Node("n1"), "drain_started"), msOrEmpty(st.drain); got != want {
						t.Errorf("step %q: drain_started in Redis %q, want %q", st.name, got, want)
					}
				}
			}
		})
	}
}

func msOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return ms(t)
}
