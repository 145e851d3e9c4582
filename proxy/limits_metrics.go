package proxy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// limitMetrics are the flood limits' metrics; limited is indexed by
// limitReason so counting allocates nothing.
type limitMetrics struct {
	limited     [numLimitReasons]prometheus.Counter
	sources     prometheus.Gauge
	halfOpen    prometheus.Gauge
	ackTimeouts prometheus.Counter
}

func newLimitMetrics(reg prometheus.Registerer) (*limitMetrics, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_proxy_limited_total",
		Help: "New dialogs refused with 503 (or, reason source_drop, dropped unanswered) by a flood limit, by reason.",
	}, []string{"reason"})
	m := &limitMetrics{
		sources: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_proxy_limit_sources", Help: "Source IPs in the per-source limit table.",
		}),
		halfOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_proxy_halfopen_dialogs", Help: "INVITE dialogs forwarded and not answered yet, or answered 2xx and not ACKed yet.",
		}),
		ackTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_proxy_ack_timeouts_total", Help: "Calls answered 2xx and never ACKed, ended after Timer H (32 s).",
		}),
	}
	for r := limitReason(1); r < numLimitReasons; r++ {
		m.limited[r] = vec.WithLabelValues(r.String())
	}
	for _, c := range []prometheus.Collector{vec, m.sources, m.halfOpen, m.ackTimeouts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register proxy limit metrics: %w", err)
		}
	}
	return m, nil
}
