package ring

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

func newRedis(t *testing.T) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	return mr, rdb
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func TestMarkOutOfService_FirstWriterWins(t *testing.T) {
	mr, rdb := newRedis(t)
	ctx := t.Context()
	mr.HSet(tk.Node("n1"), "addr", "h:1")
	for i, now := range []time.Time{t0, t0.Add(time.Second), t0.Add(time.Hour)} {
		wrote, err := markOut(ctx, rdb, tk, "n1", now)
		if err != nil {
			t.Fatal(err)
		}
		if wrote != (i == 0) || mr.HGet(tk.Node("n1"), "drain_started") != ms(t0) {
			t.Errorf("call %d: wrote %v, drain_started %q; want the first time kept", i, wrote, mr.HGet(tk.Node("n1"), "drain_started"))
		}
	}
	// A node removed meanwhile is not recreated as a hash with just drain_started.
	if err := MarkOutOfService(ctx, rdb, tk, "gone", t0); err != nil {
		t.Fatal(err)
	}
	if mr.Exists(tk.Node("gone")) {
		t.Error("MarkOutOfService created the hash of a missing node")
	}
}

func TestMarkInService_RestoresOnce(t *testing.T) {
	mr, rdb := newRedis(t)
	ctx := t.Context()
	key := tk.Node("n1")
	mr.HSet(key, "addr", "h:1", "restored_at", "123")

	// In service all along: nothing to restore, restored_at untouched.
	if restored, err := MarkInService(ctx, rdb, tk, "n1", t0); err != nil || restored || mr.HGet(key, "restored_at") != "123" {
		t.Fatalf("without drain_started: restored %v err %v restored_at %q", restored, err, mr.HGet(key, "restored_at"))
	}
	mr.HSet(key, "drain_started", ms(t0.Add(-time.Hour)))
	for i, now := range []time.Time{t0, t0.Add(time.Second)} {
		restored, at, err := markIn(ctx, rdb, tk, "n1", now)
		if err != nil {
			t.Fatal(err)
		}
		if restored != (i == 0) || !at.Equal(t0) || mr.HGet(key, "restored_at") != ms(t0) || mr.HGet(key, "drain_started") != "" {
			t.Errorf("call %d: restored %v at %v, hash %v; want one restore at t0", i, restored, at, hash(mr, key))
		}
	}
	if restored, err := MarkInService(ctx, rdb, tk, "gone", t0); err != nil || restored || mr.Exists(tk.Node("gone")) {
		t.Errorf("missing node: restored %v err %v exists %v", restored, err, mr.Exists(tk.Node("gone")))
	}
}

func hash(mr *miniredis.Miniredis, key string) map[string]string {
	out := map[string]string{}
	fields, _ := mr.HKeys(key)
	for _, f := range fields {
		out[f] = mr.HGet(key, f)
	}
	return out
}

// Instances see a change at about the same time and all try to record it;
// the scripts make exactly one of them win, with one timestamp.
func TestMark_ConcurrentCallersAgree(t *testing.T) {
	mr, rdb := newRedis(t)
	ctx := t.Context()
	key := tk.Node("n1")
	mr.HSet(key, "addr", "h:1")
	const callers = 8
	race := func(f func(i int) bool) (winners []int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range callers {
			wg.Go(func() {
				<-start
				if f(i) {
					mu.Lock()
					winners = append(winners, i)
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		return winners
	}
	for round := range 20 {
		base := t0.Add(time.Duration(round) * time.Hour)
		at := func(i int) time.Time { return base.Add(time.Duration(i) * time.Millisecond) }

		w := race(func(i int) bool {
			wrote, err := markOut(ctx, rdb, tk, "n1", at(i))
			if err != nil {
				t.Error(err)
			}
			return wrote
		})
		if len(w) != 1 || mr.HGet(key, "drain_started") != ms(at(w[0])) {
			t.Fatalf("round %d out: winners %v, hash %v", round, w, hash(mr, key))
		}

		w = race(func(i int) bool {
			restored, err := MarkInService(ctx, rdb, tk, "n1", at(i))
			if err != nil {
				t.Error(err)
			}
			return restored
		})
		if len(w) != 1 || mr.HGet(key, "restored_at") != ms(at(w[0])) || mr.HGet(key, "drain_started") != "" {
			t.Fatalf("round %d in: winners %v, hash %v; want one restored_at", round, w, hash(mr, key))
		}
	}
}

// fakePolicy is a PolicySource the test changes at will.
type fakePolicy struct {
	mu sync.Mutex
	p  Policy
}

func (f *fakePolicy) NodePolicy() Policy { f.mu.Lock(); defer f.mu.Unlock(); return f.p }
func (f *fakePolicy) set(p Policy)       { f.mu.Lock(); defer f.mu.Unlock(); f.p = p }

var _ PolicySource = (*fakePolicy)(nil)

// writeCounter counts successful write commands the watcher sends.
type writeCounter struct{ n atomic.Int64 }

func (c *writeCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *writeCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (c *writeCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		switch cmd.Name() {
		case "eval", "evalsha", "hset", "hsetnx", "hdel", "del":
			if err == nil {
				c.n.Add(1)
			}
		}
		return err
	}
}

func TestWatcher_MaintenanceRecordsDrainAndRestoreWithSlowStart(t *testing.T) {
	pol := &fakePolicy{p: Policy{SlowStart: time.Minute, DrainTimeout: time.Hour}}
	h := newHarness(t, WatcherOptions{ResyncInterval: 5 * time.Millisecond, Policy: pol}, nil)
	writes := &writeCounter{}
	h.rdb.AddHook(writes)
	key := tk.Node("n1")
	h.put("n1", "site", "a")
	h.put("n2", "site", "a")
	h.run(t)
	// settle lets the watcher reload a few dozen times: for checking that
	// nothing happens, there is nothing to wait for but time.
	settle := func() { time.Sleep(100 * time.Millisecond) }
	st := func() NodeStatus { s, _ := h.w.Snapshot().Status("n1"); return s }

	settle()
	if n := writes.n.Load(); n != 0 {
		t.Fatalf("%d writes in steady state", n)
	}

	// Operator: plain redis-cli HSET, no publish.
	h.mr.HSet(key, "maintenance", "1")
	outAt := time.UnixMilli(h.now.Load())
	eventually(t, "drain_started recorded", func() bool { return h.mr.HGet(key, "drain_started") == ms(outAt) })
	eventually(t, "n1 out of the ring", func() bool { return !h.w.Snapshot().Eligible("n1") })
	if s := st(); s.State != StateMaintenance || s.OutReason != ReasonManualMaintenance || !s.Healthy || s.ReportedLoad != 1 {
		t.Errorf("n1 in maintenance: %+v", s)
	}
	settle()
	if n := writes.n.Load(); n != 1 {
		t.Errorf("%d writes after going out of service, want 1 and none while it stays out", n)
	}

	h.mr.HSet(tk.NodeCalls(), "n1", "2")
	eventually(t, "n1 draining", func() bool { return st().State == StateDraining })
	if got := testutil.ToFloat64(h.w.m.drainCalls.WithLabelValues("n1")); got != 2 {
		t.Errorf("drain calls gauge %v, want 2", got)
	}
	if got := testutil.ToFloat64(h.w.m.states.WithLabelValues(StateDraining)); got != 1 {
		t.Errorf("draining nodes gauge %v", got)
	}

	h.now.Add(10_000)
	backAt := time.UnixMilli(h.now.Load())
	h.mr.HSet(key, "maintenance", "0")
	eventually(t, "restored_at recorded", func() bool {
		return h.mr.HGet(key, "drain_started") == "" && h.mr.HGet(key, "restored_at") == ms(backAt)
	})
	eventually(t, "n1 back in the ring", func() bool { return h.w.Snapshot().Eligible("n1") })
	if s := st(); s.State != StateNormal || s.EffectiveWeight != 0 || s.ReportedLoad != 0 {
		t.Errorf("n1 just back: %+v, want normal at weight 0", s)
	}
	if n := testutil.CollectAndCount(h.w.m.drainCalls); n != 0 {
		t.Errorf("%d drain calls series left for nodes in service", n)
	}
	v := h.w.Snapshot().Version()
	h.now.Add(30_000)
	eventually(t, "half way up the ramp", func() bool { return st().EffectiveWeight == 50 })
	if h.w.Snapshot().Version() <= v {
		t.Error("version did not move with the effective weight")
	}
	h.now.Add(60_000)
	eventually(t, "full weight", func() bool { return st().EffectiveWeight == 100 })
	v = h.w.Snapshot().Version()
	settle()
	if h.w.Snapshot().Version() != v {
		t.Error("version moved after the ramp ended")
	}
	if n := writes.n.Load(); n != 2 {
		t.Errorf("%d writes in all, want 2 (out, back)", n)
	}

	var seen []string
	for _, l := range h.log.lines(t, "media node state changed") {
		if l["node"] == "n1" && l["level"] == "info" {
			seen = append(seen, l["state"].(string)+"/"+str(l["reason"]))
		}
	}
	want := []string{"maintenance/manual maintenance", "draining/manual maintenance", "normal/"}
	if len(seen) != len(want) || seen[0] != want[0] || seen[1] != want[1] || seen[2] != want[2] {
		t.Errorf("transitions logged %v, want %v", seen, want)
	}
}

func str(v any) string { s, _ := v.(string); return s }

func TestWatcher_DeserviceProfileFromPolicy(t *testing.T) {
	pol := &fakePolicy{p: Policy{DeservicedServers: map[string]string{"srv1": "p1"}}}
	h := newHarness(t, WatcherOptions{ResyncInterval: time.Hour, Policy: pol}, nil)
	h.put("n1", "server", "srv1")
	h.put("n2", "server", "srv2")
	h.run(t) // Start's first load already records the transition
	if got := h.mr.HGet(tk.Node("n1"), "drain_started"); got != ms(time.UnixMilli(h.now.Load())) {
		t.Errorf("drain_started %q after the first load", got)
	}
	s, _ := h.w.Snapshot().Status("n1")
	if s.OutReason != "deserviced by profile p1" || s.Eligible || !s.Healthy {
		t.Errorf("n1: %+v", s)
	}
	if s, _ := h.w.Snapshot().Status("n2"); !s.Eligible || h.mr.HGet(tk.Node("n2"), "drain_started") != "" {
		t.Errorf("n2 touched: %+v", s)
	}

	pol.set(Policy{})
	h.w.Refresh() // what the admission package does when profiles change
	eventually(t, "n1 restored", func() bool { return h.w.Snapshot().Eligible("n1") })
	if h.mr.HGet(tk.Node("n1"), "restored_at") == "" || h.mr.HGet(tk.Node("n1"), "drain_started") != "" {
		t.Errorf("hash after restore: %v", hash(h.mr, tk.Node("n1")))
	}
}

func TestWatcher_BadCallCountLoggedOnceCountedAsZero(t *testing.T) {
	const msg = "invalid call count counted as 0 until fixed"
	h := newHarness(t, WatcherOptions{}, nil)
	h.put("n1", "maintenance", "1")
	h.put("n2")
	h.mr.HSet(tk.NodeCalls(), "n1", "lots")
	ctx := t.Context()
	for range 3 {
		if err := h.w.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	lines := h.log.lines(t, msg)
	if len(lines) != 1 || lines[0]["key"] != tk.NodeCalls() || lines[0]["field"] != "n1" || lines[0]["value"] != "lots" {
		t.Fatalf("log lines %v, want one with key, field and value", lines)
	}
	if s, _ := h.w.Snapshot().Status("n1"); s.Calls != 0 || s.State != StateMaintenance {
		t.Errorf("n1: %+v, want 0 calls, maintenance", s)
	}
	h.mr.HSet(tk.NodeCalls(), "n1", "1")
	if err := h.w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.w.Snapshot().Status("n1"); s.Calls != 1 || s.State != StateDraining {
		t.Errorf("n1 after the fix: %+v", s)
	}
	h.mr.HSet(tk.NodeCalls(), "n1", "lots")
	if err := h.w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(h.log.lines(t, msg)); n != 2 {
		t.Errorf("%d log lines, want the error logged again after a fix", n)
	}
}
