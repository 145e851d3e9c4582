package contract

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// The names are the ones admission's state watcher exported before the
// contract had its own package; dashboards keep working.
type metrics struct {
	badValues prometheus.Counter
	errors    prometheus.Counter
	lastLoad  prometheus.Gauge
	reloads   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		badValues: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_state_bad_values_total", Help: "Bad values found in Redis (logged once per change, ignored).",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_state_redis_errors_total", Help: "Failed reloads of the Redis contract (nodes, profiles, exceptions, instances, settings).",
		}),
		lastLoad: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_state_last_load_timestamp_seconds", Help: "When the Redis contract was last read.",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_state_reloads_total", Help: "Successful reloads of the Redis contract (one pipelined read each).",
		}),
	}
	for _, c := range []prometheus.Collector{m.badValues, m.errors, m.lastLoad, m.reloads} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register state metrics: %w", err)
		}
	}
	return m, nil
}
