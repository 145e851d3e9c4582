package ring

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rebuilds      prometheus.Counter
	nodes         *prometheus.GaugeVec
	nodeErrors    prometheus.Counter
	redisErrors   *prometheus.CounterVec
	probeFailures prometheus.Counter
	lastLoad      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rebuilds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_ring_rebuilds_total",
			Help: "Times the ring of eligible media nodes changed members or weights.",
		}),
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sipedge_ring_nodes",
			Help: "Media nodes listed in Redis, by state (healthy, unhealthy, invalid).",
		}, []string{"state"}),
		nodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_ring_node_errors_total",
			Help: "Invalid node hashes seen, counted once per distinct error (as logged).",
		}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_ring_redis_errors_total",
			Help: "Redis errors while reading media nodes, by operation.",
		}, []string{"op"}),
		probeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_ring_probe_failures_total",
			Help: "SIP OPTIONS probes to media nodes that failed or timed out.",
		}),
		lastLoad: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_ring_last_load_timestamp_seconds",
			Help: "Unix time of the last successful read of the media nodes from Redis (staleness while Redis fails).",
		}),
	}
	for _, s := range []string{"healthy", "unhealthy", "invalid"} {
		m.nodes.WithLabelValues(s) // export zeros before the first load
	}
	m.redisErrors.WithLabelValues("load")
	for _, c := range []prometheus.Collector{m.rebuilds, m.nodes, m.nodeErrors, m.redisErrors, m.probeFailures, m.lastLoad} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register ring metrics: %w", err)
		}
	}
	return m, nil
}
