package app

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
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

// keepRouteSecret writes the route secret this instance holds back into
// Redis when it is missing (Redis restarted empty), so instances started
// later share it instead of making a new one. SETNX: a secret present is
// never overwritten.
func keepRouteSecret(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, secret string, every, timeout time.Duration, log zerolog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wctx, cancel := context.WithTimeout(ctx, max(timeout, time.Second))
		wrote, err := rdb.SetNX(wctx, k.RouteSecret(), secret, 0).Result()
		cancel()
		switch {
		case err != nil:
			// The Redis monitor reports the outage; try again next tick.
		case wrote:
			log.Warn().Str("key", k.RouteSecret()).Msg("route secret was missing from Redis: wrote back the one this instance holds")
		}
	}
}
