package app

import (
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/rawtcp"
)

// redisOptions bounds every Redis call by redis_timeout: the context
// deadline reaches the socket (ContextTimeoutEnabled), and dialing, reading,
// writing and waiting for a pooled connection each give up after it, so no
// SIP request waits on a stalled Redis (DEBUG SLEEP, CLIENT PAUSE) longer.
// Calls with a longer context of their own (a full reload) get the socket
// timeout per read, not per call. The connections' reads and writes stay
// out of the runtime's syscall state (internal/rawtcp).
func redisOptions(addr string, timeout time.Duration) *redis.UniversalOptions {
	dial := max(timeout, 100*time.Millisecond)
	return &redis.UniversalOptions{
		Addrs:                 []string{addr},
		Dialer:                rawtcp.Dialer(dial),
		ContextTimeoutEnabled: true,
		DialTimeout:           dial,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		PoolTimeout:           timeout,
	}
}
