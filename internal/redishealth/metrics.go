package redishealth

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	up          prometheus.Gauge
	lastSuccess prometheus.Gauge
	failures    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, staleness func() float64) (*metrics, error) {
	m := &metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_redis_up", Help: "1 while Redis answers the health probe, 0 while it is unreachable or stalled.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_redis_last_success_timestamp_seconds", Help: "Unix time of the last successful Redis health probe.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_redis_probe_failures_total", Help: "Redis health probes that failed or timed out (redis_timeout).",
		}),
	}
	stale := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sipedge_redis_staleness_seconds", Help: "Seconds since Redis last answered: how old the Redis-backed state may be.",
	}, staleness)
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	for _, c := range []prometheus.Collector{m.up, m.lastSuccess, m.failures, stale} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register redis metrics: %w", err)
		}
	}
	return m, nil
}
