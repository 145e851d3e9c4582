package app

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
)

func TestRedisOptions_EveryWaitBoundedByRedisTimeout(t *testing.T) {
	o := redisOptions("127.0.0.1:6379", 250*time.Millisecond)
	if !o.ContextTimeoutEnabled {
		t.Error("ContextTimeoutEnabled off: a context deadline would not reach the socket")
	}
	for name, d := range map[string]time.Duration{"read": o.ReadTimeout, "write": o.WriteTimeout, "pool": o.PoolTimeout, "dial": o.DialTimeout} {
		if d <= 0 || d > 250*time.Millisecond {
			t.Errorf("%s timeout = %v, want within (0, redis_timeout]", name, d)
		}
	}
}

// TestKeepRouteSecret_WrittenBackWhenMissingOnly: a missing secret is
// written back; one present (another instance's, or an operator's) stays.
func TestKeepRouteSecret_WrittenBackWhenMissingOnly(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	k := keys.New("")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		keepRouteSecret(ctx, rdb, k, "mine", 10*time.Millisecond, time.Second, zerolog.Nop())
		close(done)
	}()
	defer func() { cancel(); <-done }()

	wait := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, _ := mr.Get(k.RouteSecret())
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("route secret = %q, want %q", got, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("mine") // missing at start: written
	mr.FlushAll()
	wait("mine") // Redis restarted empty: written back
	mr.Set(k.RouteSecret(), "theirs")
	time.Sleep(50 * time.Millisecond)
	wait("theirs") // present: never overwritten
}
