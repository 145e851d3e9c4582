package ring

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/contract"
)

// With the process's shared contract watcher as Source, the ring takes the
// deservice profiles and settings from the very snapshot that holds the
// nodes (no PolicySource), follows each of the source's reloads, and opens
// no subscription of its own.
func TestWatcher_SharedSource_JudgesNodesWithTheSameSnapshot(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	mr.SAdd(tk.Nodes(), "n1", "n2")
	mr.HSet(tk.Node("n1"), "addr", "127.0.0.1:5060", "server", "srv1")
	mr.HSet(tk.Node("n2"), "addr", "127.0.0.1:5061", "server", "srv2")
	mr.SAdd(tk.Profiles(), "p1")
	mr.HSet(tk.Profile("p1"), "servers", "srv1", "status", "deservice")
	mr.HSet(tk.Settings(), "slow_start", "0")

	src, err := contract.NewWatcher(rdb, tk, contract.Options{Every: 20 * time.Millisecond}, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(rdb, tk, WatcherOptions{Source: src}, nil, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	st, ok := w.Snapshot().Status("n1")
	if !ok || st.InService || st.OutReason != ReasonDeservicedPrefix+"p1" || w.Snapshot().Eligible("n1") {
		t.Fatalf("n1 at start: %+v, want out of service by p1", st)
	}
	if mr.HGet(tk.Node("n1"), "drain_started") == "" {
		t.Error("drain start of n1 not recorded")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = src.Run(ctx); done <- struct{}{} }()
	go func() { _ = w.Run(ctx); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()

	mr.HSet(tk.Profile("p1"), "status", "normal") // plain write: the next resync of the source
	eventually(t, "n1 back in the ring", func() bool { return w.Snapshot().Eligible("n1") })
	eventually(t, "the source subscribed", func() bool { return mr.PubSubNumSub(tk.Events())[tk.Events()] >= 1 })
	time.Sleep(50 * time.Millisecond) // the ring would have subscribed by now too
	if got := mr.PubSubNumSub(tk.Events())[tk.Events()]; got != 1 {
		t.Errorf("%d subscriptions with a shared source, want the source's one", got)
	}
	if mr.HGet(tk.Node("n1"), "drain_started") != "" || mr.HGet(tk.Node("n1"), "restored_at") == "" {
		t.Error("return to service of n1 not recorded")
	}
}
