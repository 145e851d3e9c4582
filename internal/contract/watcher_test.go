package contract

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
)

// counter is a go-redis hook counting round trips and commands.
type counter struct{ trips, cmds atomic.Int64 }

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name != "client" && name != "hello" { // connection set-up
			c.trips.Add(1)
			c.cmds.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, x := range cmds {
			if name := x.Name(); name != "client" && name != "hello" { // connection set-up
				n++
			}
		}
		if n > 0 {
			c.trips.Add(1)
			c.cmds.Add(int64(n))
		}
		return next(ctx, cmds)
	}
}
func (c *counter) reset() (trips, cmds int64) { return c.trips.Swap(0), c.cmds.Swap(0) }

var _ redis.Hook = (*counter)(nil)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func populate(mr *miniredis.Miniredis, nodes, profiles, instances int) {
	for i := range nodes {
		n := "n" + string(rune('a'+i))
		mr.SAdd(tk.Nodes(), n)
		mr.HSet(tk.Node(n), "addr", "127.0.0.1:5060", "server", "srv-"+n)
		mr.HSet(tk.NodeCalls(), n, "1")
	}
	for i := range profiles {
		p := "p" + string(rune('a'+i))
		mr.SAdd(tk.Profiles(), p)
		mr.HSet(tk.Profile(p), "name", p, "servers", "srv-na", "status", "normal")
	}
	for i := range instances {
		in := "edge-" + string(rune('a'+i))
		mr.SAdd(tk.Instances(), in)
		mr.HSet(tk.Instance(in), "site", "ams", "heartbeat", "1700000000000")
	}
	mr.SAdd(tk.Exceptions(), "edge-a")
	mr.HSet(tk.Settings(), "retry_after", "12")
}

// TestLoad_OneRoundTripWhileTheSetsStay: SPEC §2 wants every change within
// 1 s, so every instance reloads twice a second; a reload is one pipelined
// round trip of 6 + nodes + profiles + instances commands, and a second
// one only for members added since the last.
func TestLoad_OneRoundTripWhileTheSetsStay(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	if err := rdb.Ping(t.Context()).Err(); err != nil { // the connection's own set-up is not counted
		t.Fatal(err)
	}
	var c counter
	rdb.AddHook(&c)
	populate(mr, 4, 2, 3)

	first, err := Load(t.Context(), rdb, tk, DefaultSettings(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if trips, cmds := c.reset(); trips != 2 || cmds != 6+4+2+3 {
		t.Errorf("first load: %d round trips, %d commands; want 2 and %d", trips, cmds, 6+4+2+3)
	}
	s, err := Load(t.Context(), rdb, tk, DefaultSettings(), first)
	if err != nil {
		t.Fatal(err)
	}
	if trips, cmds := c.reset(); trips != 1 || cmds != 6+4+2+3 {
		t.Errorf("steady reload: %d round trips, %d commands; want 1 and %d", trips, cmds, 6+4+2+3)
	}
	t.Logf("steady reload with 4 nodes, 2 profiles, 3 instances: 1 round trip, %d commands", 6+4+2+3)
	if len(s.Nodes) != 4 || len(s.Profiles) != 2 || len(s.Instances) != 3 || !s.Exceptions["edge-a"] ||
		s.Settings.RetryAfter != 12 || s.Calls["na"] != 1 || s.Version != 2 {
		t.Fatalf("snapshot %+v", s)
	}

	// A node added: one more round trip for it alone; one removed: none.
	mr.SAdd(tk.Nodes(), "zz")
	mr.HSet(tk.Node("zz"), "addr", "127.0.0.1:5070")
	mr.SRem(tk.Nodes(), "na")
	s, err = Load(t.Context(), rdb, tk, DefaultSettings(), s)
	if err != nil {
		t.Fatal(err)
	}
	if trips, cmds := c.reset(); trips != 2 || cmds != 6+4+2+3+1 {
		t.Errorf("after a change of members: %d round trips, %d commands; want 2 and %d", trips, cmds, 6+4+2+3+1)
	}
	names := []string{}
	for _, n := range s.Nodes {
		names = append(names, n.Name)
	}
	if strings.Join(names, ",") != "nb,nc,nd,zz" {
		t.Errorf("nodes %v, want nb,nc,nd,zz (sorted, na gone)", names)
	}
}

// BenchmarkLoad reports the commands and round trips of one steady reload.
func BenchmarkLoad(b *testing.B) {
	mr := miniredis.RunT(b)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	_ = rdb.Ping(context.Background()).Err()
	var c counter
	rdb.AddHook(&c)
	populate(mr, 10, 3, 4)
	s, _ := Load(context.Background(), rdb, tk, DefaultSettings(), nil)
	c.reset()
	b.ResetTimer()
	for b.Loop() {
		s, _ = Load(context.Background(), rdb, tk, DefaultSettings(), s)
	}
	trips, cmds := c.reset()
	b.ReportMetric(float64(trips)/float64(b.N), "roundtrips/op")
	b.ReportMetric(float64(cmds)/float64(b.N), "cmds/op")
}

func TestLoad_BadRecords(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	mr.SAdd(tk.Nodes(), "good", "ghost", "heavy")
	mr.HSet(tk.Node("good"), "addr", "127.0.0.1:5060")
	mr.HSet(tk.Node("heavy"), "addr", "127.0.0.1:5060", "weight", "abc")
	mr.HSet(tk.NodeCalls(), "good", "x")
	mr.SAdd(tk.Profiles(), "p1", "empty")
	mr.HSet(tk.Profile("p1"), "status", "off", "servers", "s1")
	mr.HSet(tk.Settings(), "slow_start", "abc")
	s, err := Load(t.Context(), rdb, tk, DefaultSettings(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Nodes) != 1 || s.NodeErrs["ghost"].Err != ErrNoHash || s.NodeErrs["heavy"].Err != ErrNotNumber {
		t.Errorf("nodes %v errs %v", s.Nodes, s.NodeErrs)
	}
	if len(s.CallErrs) != 1 || s.Calls["good"] != 0 {
		t.Errorf("calls %v %v", s.Calls, s.CallErrs)
	}
	if _, ok := s.Profiles["empty"]; ok || s.Profiles["p1"].Deservice {
		t.Errorf("profiles %+v", s.Profiles)
	}
	fields := []string{}
	for _, e := range s.Bad {
		fields = append(fields, e.Key+"/"+e.Field)
	}
	if strings.Join(fields, " ") != "sipedge:profile:p1/status sipedge:settings/slow_start" {
		t.Errorf("bad values %v", fields)
	}
	mr.Close()
	if _, err := Load(t.Context(), rdb, tk, DefaultSettings(), s); err == nil {
		t.Error("no error without Redis")
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWatcher_OneSubscription: one subscription per process carries both
// the reload events and the conference ends; a conf-end reaches ConfEnds
// without a reload, any other message reloads at once.
func TestWatcher_OneSubscription(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	var logs syncBuffer
	w, err := NewWatcher(rdb, tk, Options{Every: time.Hour}, zerolog.New(&logs), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	updates := w.Notify()
	heard := make(chan string, 1) // OnConfEnd: admission's Ledger listens beside ConfEnds
	w.OnConfEnd(func(id string) { heard <- id })
	placed := make(chan string, 4) // OnConfPlaced and OnPlacementsSubscribed: the Ledger's placement index
	w.OnConfPlaced(func(id string, isPlaced bool) {
		if !isPlaced {
			id = "gone " + id
		}
		placed <- id
	})
	w.OnConfMoved(func(id string) { placed <- "moved " + id })
	w.OnPlacementsSubscribed(func() { placed <- "(subscribed)" })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	eventually(t, "subscribed", func() bool { return mr.PubSubNumSub(tk.Events())[tk.Events()] == 1 })
	eventually(t, "reload after subscribing", func() bool { return w.Snapshot().Version >= 2 })
	<-updates
	// The start-up reloads (Run's first, the subscription's confirmation)
	// may land in either order: take the version once they are done.
	for quiet := false; !quiet; {
		select {
		case <-updates:
		case <-time.After(300 * time.Millisecond):
			quiet = true
		}
	}
	v := w.Snapshot().Version

	mr.Publish(tk.Events(), "conf-end c42")
	select {
	case id := <-w.ConfEnds():
		if id != "c42" {
			t.Errorf("conf end %q, want c42", id)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("conf-end not delivered")
	}
	select {
	case id := <-heard:
		if id != "c42" {
			t.Errorf("OnConfEnd got %q, want c42", id)
		}
	default:
		t.Error("conf-end not given to OnConfEnd before ConfEnds")
	}
	select {
	case got := <-placed:
		if got != "(subscribed)" {
			t.Errorf("first placements hook call %q, want the subscription", got)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("OnPlacementsSubscribed not called")
	}
	if n := mr.PubSubNumSub(tk.Placements())[tk.Placements()]; n != 1 {
		t.Errorf("%d subscriptions to the placements channel, want 1", n)
	}
	mr.Publish(tk.Placements(), "junk")
	mr.Publish(tk.Placements(), keys.PlacedMessage("c7"))
	mr.Publish(tk.Placements(), keys.MovedMessage("c7"))
	mr.Publish(tk.Placements(), keys.GoneMessage("c7"))
	for _, want := range []string{"c7", "moved c7", "gone c7"} {
		select {
		case got := <-placed:
			if got != want {
				t.Errorf("OnConfPlaced got %q, want %q", got, want)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("placement message %q not given to OnConfPlaced or OnConfMoved", want)
		}
	}
	mr.SAdd(tk.Exceptions(), "edge-b") // plain write: seen at the next reload
	mr.Publish(tk.Events(), "exceptions")
	eventually(t, "reload on an event", func() bool { return w.Snapshot().Exceptions["edge-b"] })
	if got := w.Snapshot().Version; got != v+1 {
		t.Errorf("version %d after a conf-end, a placement and an event, want %d (the conf-end and the placement reload nothing)", got, v+1)
	}
	if n := mr.PubSubNumSub(tk.Events())[tk.Events()]; n != 1 {
		t.Errorf("%d subscriptions, want 1", n)
	}
}

// TestWatcher_FailStaticAndBadValuesOnce: SPEC §2 and §7.
func TestWatcher_FailStaticAndBadValuesOnce(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	var logs syncBuffer
	w, err := NewWatcher(rdb, tk, Options{Every: time.Hour}, zerolog.New(&logs), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	mr.HSet(tk.Settings(), "retry_after", "12", "media_timeout", "0")
	for range 3 {
		if err := w.Reload(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), `"field":"media_timeout"`); n != 1 {
		t.Errorf("bad media_timeout logged %d times over 3 reloads, want once", n)
	}
	mr.HSet(tk.Settings(), "media_timeout", "x")
	_ = w.Reload(t.Context())
	if n := strings.Count(logs.String(), `"field":"media_timeout"`); n != 2 {
		t.Errorf("changed bad value logged %d times in all, want 2", n)
	}
	w.SetDefaults(Settings{RetryAfter: 5, MediaTimeout: 9 * time.Second})
	_ = w.Reload(t.Context())
	if s := w.Snapshot().Settings; s.RetryAfter != 12 || s.MediaTimeout != 60*time.Second {
		t.Errorf("settings %+v: want retry_after from Redis, the bad media_timeout at its last good 60s", s)
	}
	mr.HDel(tk.Settings(), "media_timeout")
	_ = w.Reload(t.Context())
	s := w.Snapshot()
	if s.Settings.RetryAfter != 12 || s.Settings.MediaTimeout != 9*time.Second {
		t.Errorf("settings %+v: want retry_after from Redis, media_timeout the new default", s.Settings)
	}
	mr.Close()
	if err := w.Reload(t.Context()); err == nil || w.Err() == nil {
		t.Fatal("no error without Redis")
	}
	if w.Snapshot() != s {
		t.Error("snapshot replaced while Redis is down")
	}
	if !strings.Contains(logs.String(), "keeping the last known state") {
		t.Errorf("outage not logged:\n%s", logs.String())
	}
}
