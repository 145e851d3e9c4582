package admission

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rejects     *prometheus.CounterVec
	placements  *prometheus.CounterVec
	redisErrors *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_admission_rejects_total",
			Help: "New dialogs rejected by admission, by reason.",
		}, []string{"reason"}),
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_admission_placements_total",
			Help: "New dialogs admitted, by how the node was found (sticky or ring).",
		}, []string{"placement"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_admission_redis_errors_total",
			Help: "Redis errors on the admission path, by operation.",
		}, []string{"op"}),
	}
	for _, c := range []prometheus.Collector{m.rejects, m.placements, m.redisErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register admission metrics: %w", err)
		}
	}
	return m, nil
}
