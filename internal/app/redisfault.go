package app

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// redisOptions bounds every Redis call by redis_timeout: the context
// deadline reaches the socket (ContextTimeoutEnabled), and dialing, reading,
// writing and waiting for a pooled connection each give up after it, so no
// SIP request waits on a stalled Redis (DEBUG SLEEP, CLIENT PAUSE) longer.
// Calls with a longer context of their own (a full reload) get the socket
// timeout per read, not per call.
func redisOptions(addr string, timeout time.Duration) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:                 []string{addr},
		ContextTimeoutEnabled: true,
		DialTimeout:           max(timeout, 100*time.Millisecond),
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		PoolTimeout:           timeout,
	}
}
