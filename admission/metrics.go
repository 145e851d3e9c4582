package admission

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rejects     *prometheus.CounterVec
	placements  *prometheus.CounterVec
	redisErrors *prometheus.CounterVec
	stickyLocal prometheus.Counter // sticky lookups answered from the Ledger (sticky.go)
	stickyRedis prometheus.Counter // sticky lookups sent to Redis
	// stickyUnplaced: lookups answered "no placement" by the Ledger's index (unplaced.go)
	stickyUnplaced prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_admission_rejects_total",
			Help: "New dialogs (INVITE, REGISTER, SUBSCRIBE) rejected by admission, by reason: no_node, deserviced, shutting_down.",
		}, []string{"reason"}),
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_admission_placements_total",
			Help: "New dialogs (INVITE, REGISTER, SUBSCRIBE) admitted, by how the node was found (sticky or ring); in-dialog requests are not counted.",
		}, []string{"placement"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_admission_redis_errors_total",
			Help: "Redis errors on the admission path, by operation.",
		}, []string{"op"}),
	}
	stickyLookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_admission_sticky_lookups_total",
		Help: "Sticky placement lookups of new dialogs, by where the answer came from: local (this instance holds dialogs of the conference and its last count write returned the node), unplaced (no instance has placed the conference: the placement index knows it without asking Redis) or redis (HGET).",
	}, []string{"source"})
	m.stickyLocal, m.stickyRedis = stickyLookups.WithLabelValues(StickyLocal), stickyLookups.WithLabelValues(StickyRedis)
	m.stickyUnplaced = stickyLookups.WithLabelValues(StickyUnplaced)
	for _, c := range Causes {
		m.rejects.WithLabelValues(c)
	}
	for _, p := range []string{PlacementSticky, PlacementRing, PlacementFailover} {
		m.placements.WithLabelValues(p)
	}
	for _, c := range []prometheus.Collector{m.rejects, m.placements, m.redisErrors, stickyLookups} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register admission metrics: %w", err)
		}
	}
	return m, nil
}

type ledgerMetrics struct {
	writes     prometheus.Counter
	fullWrites *prometheus.CounterVec // by reason (ledger_beat.go)
	errors     *prometheus.CounterVec
	notes      *prometheus.CounterVec
	reconciled prometheus.Counter
	indexed    prometheus.Gauge // conference keys the last scan found (unplaced.go)
}

func newLedgerMetrics(reg prometheus.Registerer, indexReady func() bool) (*ledgerMetrics, error) {
	m := &ledgerMetrics{
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_admission_count_writes_total",
			Help: "Writes of this instance's share of the dialog counts to Redis.",
		}),
		fullWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_admission_count_full_writes_total",
			Help: "Beats that rewrote this instance's whole share and recounted every conference held here, by reason: start, periodic (every 10 beats), share_lost (Redis restarted, restored or flushed), instances_changed (another instance's share appeared, expired or was rewritten), after_failure, resubscribed. The other beats write only what changed.",
		}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_admission_count_errors_total",
			Help: "Failed writes of the dialog counts (retried at the next beat), by operation.",
		}, []string{"op"}),
		notes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_admission_end_notes_total",
			Help: "Dialog ends noted for the instance that set the dialog up, sent and received.",
		}, []string{"direction"}),
		reconciled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_admission_conf_reconciled_total",
			Help: "Conference keys corrected or deleted because no live instance held their dialogs.",
		}),
		indexed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_admission_placement_index_conferences",
			Help: "Conference keys found by the last scan of the placement index (new conferences are placed without asking Redis while the index is ready).",
		}),
	}
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sipedge_admission_placement_index_ready",
		Help: "1 while the set of conferences with a placement is complete (a scan since the placements channel was last subscribed and no Redis failure since): a conference outside it is placed by the ring without a Redis lookup. 0: every lookup asks Redis.",
	}, func() float64 {
		if indexReady() {
			return 1
		}
		return 0
	})
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	for _, r := range fullReasons {
		m.fullWrites.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.writes, m.fullWrites, m.errors, m.notes, m.reconciled, m.indexed, ready} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register ledger metrics: %w", err)
		}
	}
	return m, nil
}
