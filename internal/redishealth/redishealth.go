// Package redishealth watches the Redis connection sipedge depends on: a
// PING every interval, bounded by redis_timeout, so /readyz and the metrics
// show an unreachable or stalled Redis within about a second.
package redishealth

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Options configures a Monitor.
type Options struct {
	Interval time.Duration // between probes (default 500 ms)
	Timeout  time.Duration // bound on one probe (redis_timeout)
	FailAt   int           // consecutive failures before Redis counts as down (default 2)
	Now      func() time.Time
}

// Monitor probes Redis and remembers the last success.
type Monitor struct {
	rdb  redis.UniversalClient
	opts Options
	log  zerolog.Logger
	m    *metrics

	mu       sync.Mutex
	fails    int
	lastOK   time.Time
	lastErr  error
	down     bool
	downedAt time.Time
}

// New returns a Monitor whose metrics are registered on reg.
func New(rdb redis.UniversalClient, opts Options, log zerolog.Logger, reg prometheus.Registerer) (*Monitor, error) {
	if opts.Interval <= 0 {
		opts.Interval = 500 * time.Millisecond
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 250 * time.Millisecond
	}
	if opts.FailAt <= 0 {
		opts.FailAt = 2
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	mon := &Monitor{rdb: rdb, opts: opts, log: log}
	mon.lastOK = opts.Now() // Run is started once Redis answered
	m, err := newMetrics(reg, mon.staleness)
	if err != nil {
		return nil, err
	}
	mon.m = m
	m.up.Set(1)
	m.lastSuccess.Set(float64(mon.lastOK.UnixMilli()) / 1e3)
	return mon, nil
}

// Run probes until ctx is done.
func (mon *Monitor) Run(ctx context.Context) {
	t := time.NewTicker(mon.opts.Interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, mon.opts.Timeout)
		err := mon.rdb.Ping(pctx).Err()
		cancel()
		if ctx.Err() != nil {
			return
		}
		mon.Observe(err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Observe records the outcome of one probe.
func (mon *Monitor) Observe(err error) {
	now := mon.opts.Now()
	mon.mu.Lock()
	defer mon.mu.Unlock()
	if err == nil {
		if mon.down {
			mon.log.Info().Stringer("outage", now.Sub(mon.downedAt)).Msg("redis reachable again")
		}
		mon.fails, mon.lastErr, mon.down, mon.lastOK = 0, nil, false, now
		mon.m.up.Set(1)
		mon.m.lastSuccess.Set(float64(now.UnixMilli()) / 1e3)
		return
	}
	mon.fails++
	mon.lastErr = err
	mon.m.failures.Inc()
	if mon.fails >= mon.opts.FailAt && !mon.down {
		mon.down, mon.downedAt = true, now
		mon.m.up.Set(0)
		mon.log.Error().Err(err).Int("failures", mon.fails).Stringer("since_success", now.Sub(mon.lastOK)).
			Msg("redis unreachable or stalled: not ready; calls keep the last known state")
	}
}

// Ready is nil while Redis answers, or says since when it does not.
func (mon *Monitor) Ready() error {
	mon.mu.Lock()
	defer mon.mu.Unlock()
	if !mon.down {
		return nil
	}
	return fmt.Errorf("redis unreachable for %s: %v", mon.opts.Now().Sub(mon.lastOK).Round(time.Millisecond), mon.lastErr)
}

// Up reports whether Redis answered lately.
func (mon *Monitor) Up() bool {
	mon.mu.Lock()
	defer mon.mu.Unlock()
	return !mon.down
}

func (mon *Monitor) staleness() float64 {
	mon.mu.Lock()
	defer mon.mu.Unlock()
	return mon.opts.Now().Sub(mon.lastOK).Seconds()
}

// startupProbeTimeout bounds one probe of WaitUp: a first connection may
// take longer than redis_timeout.
const startupProbeTimeout = time.Second

// WaitUp probes Redis every Interval until it answers, for at most budget,
// then fails with a message an operator can act on instead of hanging
// (sipedge's start-up). addr names Redis in the logs and the error.
func (mon *Monitor) WaitUp(ctx context.Context, addr string, budget time.Duration) error {
	deadline := mon.opts.Now().Add(budget)
	retry := time.NewTimer(0)
	defer retry.Stop()
	<-retry.C
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, max(mon.opts.Timeout, startupProbeTimeout))
		err := mon.rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			mon.Observe(nil)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if mon.opts.Now().After(deadline) {
			return fmt.Errorf("redis at %s unreachable after %d attempts over %s: %w", addr, attempt, budget, err)
		}
		mon.log.Warn().Err(err).Str("redis", addr).Int("attempt", attempt).Msg("redis not reachable yet, retrying")
		retry.Reset(mon.opts.Interval)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-retry.C:
		}
	}
}
