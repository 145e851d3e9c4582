package app

import (
	"testing"
	"time"
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
