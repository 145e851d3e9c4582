package ring

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
)

var tk = keys.New("")

// logBuf collects JSON log lines from concurrent writers.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the decoded log lines whose message is msg.
func (l *logBuf) lines(t *testing.T, msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		var m map[string]any
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line not JSON: %q", line)
		}
		if m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

type harness struct {
	mr  *miniredis.Miniredis
	rdb *redis.Client
	w   *Watcher
	log *logBuf
	now atomic.Int64 // unix ms of the injected clock
}

func newHarness(t *testing.T, opts WatcherOptions, p Pinger) *harness {
	t.Helper()
	h := &harness{mr: miniredis.RunT(t), log: &logBuf{}}
	h.now.Store(1_700_000_000_000)
	opts.Now = func() time.Time { return time.UnixMilli(h.now.Load()) }
	rdb := redis.NewClient(&redis.Options{Addr: h.mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	h.rdb = rdb
	w, err := NewWatcher(rdb, tk, opts, p, zerolog.New(h.log), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	return h
}

// put writes a node the way an operator does with redis-cli: HSET + SADD.
func (h *harness) put(name string, fv ...string) {
	h.mr.HSet(tk.Node(name), append([]string{"addr", "127.0.0.1:5060"}, fv...)...)
	h.mr.SAdd(tk.Nodes(), name)
}

// run starts Run and stops it (checking it returns) at cleanup.
func (h *harness) run(t *testing.T) {
	t.Helper()
	if err := h.w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

// eventually polls cond until it holds or the deadline passes. The deadline
// only bounds a hung test; speed is never what is judged.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatcher_NewNodeAppearsAfterResync(t *testing.T) {
	h := newHarness(t, WatcherOptions{ResyncInterval: 20 * time.Millisecond}, nil)
	h.put("n1")
	h.run(t)
	s1 := h.w.Snapshot()
	if !s1.Eligible("n1") || s1.Eligible("n2") {
		t.Fatalf("after Start: statuses %+v", s1.Statuses())
	}
	h.put("n2", "weight", "50") // nothing published
	eventually(t, "n2 in the ring", func() bool { return h.w.Snapshot().Eligible("n2") })
	if s2 := h.w.Snapshot(); s2.Version() != s1.Version()+1 || s2.Ring().Len() != 2 {
		t.Errorf("version %d -> %d, members %d", s1.Version(), s2.Version(), s2.Ring().Len())
	}
	if n := testutil.ToFloat64(h.w.m.rebuilds); n != 2 {
		t.Errorf("rebuilds = %v, want 2 (first load, n2 added)", n)
	}
	if n := testutil.ToFloat64(h.w.m.nodes.WithLabelValues("healthy")); n != 2 {
		t.Errorf("healthy nodes gauge = %v", n)
	}
}

func TestWatcher_PublishTriggersReload(t *testing.T) {
	// Resync so rare that only the events channel can explain a reload.
	h := newHarness(t, WatcherOptions{ResyncInterval: time.Hour}, nil)
	h.run(t)
	eventually(t, "subscription", func() bool { return h.mr.PubSubNumSub(tk.Events())[tk.Events()] == 1 })
	time.Sleep(50 * time.Millisecond) // let the reload on subscribe settle
	h.put("n1")
	h.mr.Publish(tk.Events(), "node n1")
	eventually(t, "n1 in the ring after publish", func() bool { return h.w.Snapshot().Eligible("n1") })
}

func TestWatcher_InvalidNodeLoggedOnceAndSkipped(t *testing.T) {
	const msg = "invalid media node ignored until fixed"
	h := newHarness(t, WatcherOptions{}, nil)
	h.put("good")
	h.mr.SAdd(tk.Nodes(), "ghost") // listed without a hash
	ctx := t.Context()
	for _, step := range []struct {
		name      string
		weight    string
		wantLines int // total so far
		invalid   float64
	}{
		{"bad weight logged", "abc", 2, 2},
		{"same error not logged again", "abc", 2, 2},
		{"changed error logged", "-1", 3, 2},
		{"fixed: nothing logged", "10", 3, 1},
		{"broken again: logged again", "abc", 4, 2},
	} {
		t.Run(step.name, func(t *testing.T) {
			h.put("bad", "weight", step.weight)
			for range 3 {
				if err := h.w.Start(ctx); err != nil {
					t.Fatal(err)
				}
			}
			lines := h.log.lines(t, msg)
			if len(lines) != step.wantLines {
				t.Fatalf("%d log lines, want %d: %v", len(lines), step.wantLines, lines)
			}
			if got := testutil.ToFloat64(h.w.m.nodes.WithLabelValues("invalid")); got != step.invalid {
				t.Errorf("invalid gauge %v, want %v", got, step.invalid)
			}
			s := h.w.Snapshot()
			if _, ok := s.Node("bad"); ok != (step.invalid == 1) {
				t.Errorf("bad node known=%v", ok)
			}
			if !s.Eligible("good") {
				t.Error("a bad neighbour knocked out the good node")
			}
		})
	}
	lines := h.log.lines(t, msg)
	first, ghost := lines[0], lines[1]
	if first["key"] == tk.Node("ghost") {
		first, ghost = ghost, first
	}
	if first["key"] != tk.Node("bad") || first["field"] != "weight" || first["level"] != "warn" ||
		!strings.Contains(first["error"].(string), `"abc" is not a number`) {
		t.Errorf("log line %v, want warn with key, field and the value", first)
	}
	if ghost["key"] != tk.Node("ghost") || ghost["field"] != "" {
		t.Errorf("log line %v, want the ghost node's key", ghost)
	}
	if n := testutil.ToFloat64(h.w.m.nodeErrors); n != 4 {
		t.Errorf("node errors counted %v, want 4 (once per logged change)", n)
	}
}

func TestWatcher_RedisDown_KeepsLastSnapshot(t *testing.T) {
	h := newHarness(t, WatcherOptions{ResyncInterval: 10 * time.Millisecond}, nil)
	h.put("n1", "heartbeat", "1700000000000")
	h.put("n2")
	h.run(t)
	eventually(t, "both nodes in the ring", func() bool { return h.w.Snapshot().Eligible("n2") })

	// The reloads run apart from the rebuilds (the contract watcher
	// notifies the ring): the last good one may land just after the close.
	h.mr.Close()
	eventually(t, "first Redis error counted", func() bool {
		return testutil.ToFloat64(h.w.m.redisErrors.WithLabelValues("load")) >= 1
	})
	before := h.w.Snapshot()
	want, _ := before.Lookup("conf-1")
	h.now.Add(time.Minute.Milliseconds()) // n1's heartbeat would be stale by the clock
	eventually(t, "Redis errors counted", func() bool {
		return testutil.ToFloat64(h.w.m.redisErrors.WithLabelValues("load")) >= 5
	})
	after := h.w.Snapshot()
	if after != before {
		t.Errorf("snapshot replaced during the outage: version %d -> %d", before.Version(), after.Version())
	}
	if got, ok := after.Lookup("conf-1"); !ok || got != want || !after.Eligible("n1") {
		t.Errorf("lookup during outage = %v %v, want %v", got.Name, ok, want.Name)
	}
	if n := len(h.log.lines(t, "cannot read media nodes from Redis; keeping the last known ring")); n < 1 || n > 2 {
		t.Errorf("%d error lines for a continuous outage, want it logged once (or twice as the error text settles)", n)
	}

	if err := h.mr.Restart(); err != nil {
		t.Fatal(err)
	}
	h.put("n1", "heartbeat", "1700000000000") // Restart kept the data; rewrite anyway
	eventually(t, "reload after Redis returns", func() bool { return !h.w.Snapshot().Eligible("n1") })
	if st := h.w.Snapshot().Statuses()[0]; st.Reason != ReasonHeartbeatStale {
		t.Errorf("n1 after the outage: %+v, want heartbeat stale by the advanced clock", st)
	}
	if len(h.log.lines(t, "media nodes readable from Redis again")) != 1 {
		t.Error("recovery not logged")
	}
}

func TestWatcher_StartFailsWithoutRedis(t *testing.T) {
	h := newHarness(t, WatcherOptions{}, nil)
	h.mr.Close()
	if err := h.w.Start(t.Context()); err == nil {
		t.Fatal("Start succeeded without Redis")
	}
	if s := h.w.Snapshot(); s == nil || s.Ring().Len() != 0 {
		t.Errorf("snapshot %v, want empty and non-nil", s)
	}
}

func TestNewWatcher_Errors(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	reg := prometheus.NewRegistry()
	if _, err := NewWatcher(rdb, tk, WatcherOptions{}, nil, zerolog.Nop(), reg); err != nil {
		t.Fatalf("first watcher: %v", err)
	}
	for _, tc := range []struct {
		name string
		opts WatcherOptions
		reg  prometheus.Registerer
	}{
		{"probing without a Pinger", WatcherOptions{Health: HealthOptions{ProbeInterval: time.Second}}, prometheus.NewRegistry()},
		{"metrics registered twice", WatcherOptions{}, reg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewWatcher(rdb, tk, tc.opts, nil, zerolog.Nop(), tc.reg); err == nil {
				t.Error("no error")
			}
		})
	}
}

// TestWatcher_EmptyNodeSetKeepsTheLastRing: Redis restarted empty is
// treated like a lost Redis until the nodes register again or the grace
// period ends; a node set that was always empty stays empty.
func TestWatcher_EmptyNodeSetKeepsTheLastRing(t *testing.T) {
	cases := []struct {
		name      string
		grace     time.Duration
		after     time.Duration // clock advance after the flush
		reg       bool          // n2 registers again
		wantNodes []string
	}{
		{"within grace: last ring kept", 30 * time.Second, 10 * time.Second, false, []string{"n1", "n2"}},
		{"grace over: ring empty", 30 * time.Second, 31 * time.Second, false, nil},
		{"no grace: ring empty at once", 0, 0, false, nil},
		{"a node registers again: the ring is what is registered", 30 * time.Second, time.Second, true, []string{"n2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, WatcherOptions{EmptyGrace: tc.grace}, nil)
			ctx := context.Background()
			hb := func() string { return strconv.FormatInt(h.now.Load(), 10) }
			h.put("n1", "heartbeat", hb())
			h.put("n2", "heartbeat", hb())
			if err := h.w.Start(ctx); err != nil {
				t.Fatal(err)
			}
			h.mr.FlushAll()
			if err := h.w.reload(ctx); err != nil {
				t.Fatal(err)
			}
			h.now.Add(tc.after.Milliseconds())
			if tc.reg {
				h.put("n2", "heartbeat", hb())
			}
			if err := h.w.reload(ctx); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, st := range h.w.Snapshot().Statuses() {
				if h.w.Snapshot().Eligible(st.Node.Name) {
					got = append(got, st.Node.Name)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.wantNodes, ",") {
				t.Errorf("eligible nodes = %v, want %v", got, tc.wantNodes)
			}
		})
	}
	t.Run("never any node: empty, no warning", func(t *testing.T) {
		h := newHarness(t, WatcherOptions{EmptyGrace: time.Minute}, nil)
		if err := h.w.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := len(h.log.lines(t, "media node set is empty (Redis restarted empty?): keeping the last known ring until nodes register again")); n != 0 {
			t.Errorf("warned %d times with nothing to keep", n)
		}
	})
}

type fixedPolicy Policy

func (p fixedPolicy) NodePolicy() Policy { return Policy(p) }

// The drains-expired gauge (alerted on by deploy/prometheus/alerts.yml)
// counts nodes draining past drain_timeout with calls still on them.
func TestWatcher_DrainsExpiredGauge(t *testing.T) {
	h := newHarness(t, WatcherOptions{ResyncInterval: 20 * time.Millisecond, Policy: fixedPolicy{DrainTimeout: time.Hour}}, nil)
	started := strconv.FormatInt(h.now.Load()-2*time.Hour.Milliseconds(), 10)
	h.put("late", "maintenance", "1", "drain_started", started)
	h.put("fresh", "maintenance", "1", "drain_started", strconv.FormatInt(h.now.Load(), 10))
	h.put("spare")
	h.mr.HSet(tk.NodeCalls(), "late", "3", "fresh", "2")
	h.run(t)
	if got := testutil.ToFloat64(h.w.m.drainsExpired); got != 1 {
		t.Fatalf("drains expired = %v, want 1 (only the node draining for 2h > 1h)", got)
	}
	h.mr.HSet(tk.NodeCalls(), "late", "0")
	eventually(t, "the drained node leaves the gauge", func() bool { return testutil.ToFloat64(h.w.m.drainsExpired) == 0 })
}
