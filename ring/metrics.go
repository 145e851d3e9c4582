package ring

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rebuilds      prometheus.Counter
	nodes         *prometheus.GaugeVec
	states        *prometheus.GaugeVec
	drainCalls    *prometheus.GaugeVec
	drainsExpired prometheus.Gauge
	nodeErrors    prometheus.Counter
	redisErrors   *prometheus.CounterVec
	probeFailures prometheus.Counter
	probeRTT      *prometheus.HistogramVec
	lastLoad      prometheus.Gauge
	suspectMarks  prometheus.Counter
	suspectNodes  prometheus.Gauge
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
		states: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sipedge_ring_node_states",
			Help: "Valid media nodes by service state (normal, draining, maintenance), health aside.",
		}, []string{"state"}),
		drainCalls: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sipedge_node_drain_calls",
			Help: "Calls left on each media node out of service (draining; 0 once in maintenance).",
		}, []string{"node"}),
		drainsExpired: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_ring_drains_expired",
			Help: "Media nodes draining longer than drain_timeout with calls still on them (their calls are due a BYE when drain_action is bye).",
		}),
		nodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_ring_node_errors_total",
			Help: "Invalid node hashes and node_calls values seen, counted once per distinct error (as logged).",
		}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_ring_redis_errors_total",
			Help: "Redis errors about media nodes, by operation (load: reading them; mark: recording a service transition).",
		}, []string{"op"}),
		probeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_ring_probe_failures_total",
			Help: "SIP OPTIONS probes to media nodes that failed or timed out.",
		}),
		probeRTT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sipedge_ring_probe_duration_seconds",
			Help:    "Round trip of the SIP OPTIONS probes to each media node (a failed probe: the time until it failed, at most probe_timeout), by node and result (ok, failed).",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}, []string{"node", "result"}),
		lastLoad: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_ring_last_load_timestamp_seconds",
			Help: "Unix time of the last successful read of the media nodes from Redis (staleness while Redis fails).",
		}),
		suspectMarks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_ring_suspect_marks_total",
			Help: "Times a media node was marked suspect after failing a call (no answer, 408, 5xx), before probes could tell.",
		}),
		suspectNodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_ring_suspect_nodes",
			Help: "Media nodes currently suspect on this instance (out of the ring until a good probe or the hold ends).",
		}),
	}
	for _, s := range []string{"healthy", "unhealthy", "invalid"} {
		m.nodes.WithLabelValues(s) // export zeros before the first load
	}
	for _, s := range []string{StateNormal, StateDraining, StateMaintenance} {
		m.states.WithLabelValues(s)
	}
	m.redisErrors.WithLabelValues("load")
	m.redisErrors.WithLabelValues("mark")
	for _, c := range []prometheus.Collector{m.rebuilds, m.nodes, m.states, m.drainCalls, m.drainsExpired, m.nodeErrors, m.redisErrors, m.probeFailures, m.probeRTT, m.lastLoad, m.suspectMarks, m.suspectNodes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register ring metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) observeProbe(node string, rtt time.Duration, ok bool) {
	result := "ok"
	if !ok {
		result = "failed"
	}
	m.probeRTT.WithLabelValues(node, result).Observe(rtt.Seconds())
}
