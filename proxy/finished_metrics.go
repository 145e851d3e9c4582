package proxy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// finishedMetrics are the finished-transactions table's (finished*.go).
type finishedMetrics struct {
	resent         prometheus.Counter // retransmitted non-INVITE answered with the stored response
	inviteDropped  prometheus.Counter // retransmitted INVITE after its 2xx, dropped
	cancelAnswered prometheus.Counter // CANCEL of an INVITE answered 2xx, answered 200
	relayed        prometheus.Counter // node's 2xx retransmission relayed after its client transaction ended
	unmatched      [numUnmatched]prometheus.Counter
	entries        *prometheus.GaugeVec
	evicted        prometheus.Counter
}

// Why a response matched no client transaction and was dropped (label
// values of sipedge_sip_unmatched_responses_total).
type unmatchedReason int

const (
	unmatchedNotOurs unmatchedReason = iota // top Via is not this proxy's
	unmatchedUnknown                        // our Via, a branch not in the table (or expired)
	unmatchedNot2xx                         // not a 2xx to INVITE: nothing to relay statelessly
	unmatchedNoVia                          // no Via left to send it up
	numUnmatched
)

var unmatchedNames = [numUnmatched]string{"not_ours", "unknown_branch", "not_2xx_invite", "no_upstream_via"}

func newFinishedMetrics(reg prometheus.Registerer) (*finishedMetrics, error) {
	absorbed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_sip_retransmissions_absorbed_total",
		Help: "Retransmitted requests of finished transactions answered before sipgo saw them, by what was done (resent: the stored final response; dropped: an INVITE after its 2xx; cancel_200: a CANCEL after the 2xx).",
	}, []string{"action"})
	unmatched := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_sip_unmatched_responses_total",
		Help: "Responses matching no client transaction, dropped, by reason (not_ours, unknown_branch, not_2xx_invite, no_upstream_via).",
	}, []string{"reason"})
	m := &finishedMetrics{
		resent:         absorbed.WithLabelValues("resent"),
		inviteDropped:  absorbed.WithLabelValues("dropped"),
		cancelAnswered: absorbed.WithLabelValues("cancel_200"),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_2xx_retransmissions_relayed_total",
			Help: "2xx retransmissions from a node relayed upstream after their client transaction ended (matched by branch in the finished table).",
		}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sipedge_sip_finished_transactions",
			Help: "Finished transactions kept as key and last response for their RFC 3261 timers, by side (server, client).",
		}, []string{"side"}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_finished_evicted_total",
			Help: "Finished transactions dropped before their timer ran out because the table was full.",
		}),
	}
	for r := range m.unmatched {
		m.unmatched[r] = unmatched.WithLabelValues(unmatchedNames[r])
	}
	for _, c := range []prometheus.Collector{absorbed, unmatched, m.relayed, m.entries, m.evicted} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register finished transaction metrics: %w", err)
		}
	}
	return m, nil
}
