package admission

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestStateWatcher_AppliesPlainWritesAndLogsBadValuesOnce(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	k := keys.New("")
	var logs syncBuffer
	src, err := contract.NewWatcher(rdb, k, contract.Options{Every: 50 * time.Millisecond, Defaults: DefaultSettings()},
		zerolog.New(&logs), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	w := NewStateWatcher(src)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = src.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// Plain writes, nothing published.
	mr.SAdd(k.Profiles(), "p1")
	mr.HSet(k.Profile("p1"), "name", "rack", "servers", "hostA", "status", "deservice")
	mr.HSet(k.Settings(), "retry_after", "12", "slow_start", "abc")
	mr.SAdd(k.Exceptions(), "B")
	eventually(t, func() bool {
		c := w.Cluster()
		return len(c.DeservicedBy("A", "hostA")) == 1 && c.Settings.RetryAfter == 12 && c.Exceptions["B"]
	}, "plain redis writes applied")
	if got := w.Cluster().Settings.SlowStart; got != DefaultSettings().SlowStart {
		t.Errorf("slow_start = %s, want the default kept for a bad value", got)
	}
	if p := w.NodePolicy(); p.DeservicedServers["hostA"] != "p1" {
		t.Errorf("node policy = %+v, want hostA deserviced by p1", p)
	}
	time.Sleep(200 * time.Millisecond) // several more reloads of the same bad value
	if n := strings.Count(logs.String(), `"field":"slow_start"`); n != 1 {
		t.Errorf("bad slow_start logged %d times, want once per change:\n%s", n, logs.String())
	}
	mr.HSet(k.Settings(), "slow_start", "xyz")
	eventually(t, func() bool { return strings.Count(logs.String(), `"field":"slow_start"`) == 2 }, "changed bad value logged again")

	// Redis gone: the last state stays.
	mr.Close()
	time.Sleep(150 * time.Millisecond)
	if c := w.Cluster(); len(c.DeservicedBy("A", "hostA")) != 1 || c.Settings.RetryAfter != 12 {
		t.Errorf("state lost while Redis is down: %+v", c)
	}
}

func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
