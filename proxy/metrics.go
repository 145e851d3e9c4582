package proxy

import (
	"fmt"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// knownMethods get pre-resolved counters so counting a request allocates
// nothing; anything else is counted as "other" (bounded label values).
var knownMethods = []sip.RequestMethod{sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.REGISTER, sip.OPTIONS,
	sip.SUBSCRIBE, sip.NOTIFY, sip.REFER, sip.INFO, sip.MESSAGE, sip.PRACK, sip.UPDATE, sip.PUBLISH}

var classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "6xx"}

type metrics struct {
	requests      map[sip.RequestMethod]prometheus.Counter
	otherRequests prometheus.Counter
	responses     map[sip.RequestMethod]*[6]prometheus.Counter
	otherResp     *[6]prometheus.Counter
	malformed     *prometheus.CounterVec
	badRoutes     prometheus.Counter
	// placementRouted counts in-dialog requests from UAs that ignored
	// Record-Route, routed by conference placement instead.
	placementRouted prometheus.Counter
	// placementHeld counts those of them routed by the dialog held here
	// (no Redis round trip) rather than by admission.
	placementHeld  prometheus.Counter
	forwardErrors  *prometheus.CounterVec
	txActive       prometheus.Gauge
	dialogsActive  prometheus.Gauge
	endedBySipedge *prometheus.CounterVec
	sipgoErrors    prometheus.Counter
	// strippedHeaders counts X-Sipedge-* headers removed from untrusted sources.
	strippedHeaders prometheus.Counter
	sdpRejected     *prometheus.CounterVec
	// notSent counts messages sipedge meant to send and did not, by reason.
	notSent   *prometheus.CounterVec
	tcpClosed *prometheus.CounterVec
	tcpOpen   prometheus.Gauge
	// dnsRefused counts DNS queries refused because dns_lookups is off.
	dnsRefused prometheus.CounterFunc
	dnsCount   atomic.Int64
	trustMetrics
	// dialogsEnded counts dialogs set up here that ended (by BYE here, or
	// noted by another instance); byeIgnored the BYEs that moved no count.
	dialogsEnded *prometheus.CounterVec
	byeIgnored   *prometheus.CounterVec
	// orderWaits and orderTimeouts: requests held for an earlier one of
	// their dialog, and holds that ran out (sequence.go).
	orderWaits, orderTimeouts prometheus.Counter
	// orderEarly: provisionals relayed ahead of a later response of their
	// transaction that reached the relay first (respseq.go).
	orderEarly prometheus.Counter
	// rawACKs: ACKs of 2xx forwarded from their bytes, without a
	// transaction (ack_raw.go).
	rawACKs prometheus.Counter

	failovers    *prometheus.CounterVec // new calls retried on the next node, by reason (failover.go)
	failoverLate prometheus.Counter     // 2xx on an abandoned branch, ended with ACK and BYE

	stateless statelessMetrics // the stateless reject path (stateless.go)
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	reqVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_sip_requests_total", Help: "SIP requests received, by method.",
	}, []string{"method"})
	resVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_sip_responses_total", Help: "SIP responses sent upstream, by request method and class.",
	}, []string{"method", "class"})
	m := &metrics{
		requests:  make(map[sip.RequestMethod]prometheus.Counter),
		responses: make(map[sip.RequestMethod]*[6]prometheus.Counter),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_sip_malformed_total", Help: "Malformed SIP messages answered 400 or dropped, by reason.",
		}, []string{"reason"}),
		badRoutes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_bad_routes_total", Help: "In-dialog requests without a valid sipedge route.",
		}),
		placementRouted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_placement_routed_total", Help: "In-dialog requests without Route (the UA ignored Record-Route) routed by conference placement.",
		}),
		placementHeld: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_placement_held_total", Help: "In-dialog requests without Route routed by the dialog this instance holds (no Redis lookup), a subset of sipedge_sip_placement_routed_total.",
		}),
		forwardErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_sip_forward_errors_total", Help: "Requests that could not be forwarded or got no final answer, by method.",
		}, []string{"method"}),
		txActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_sip_transactions_active", Help: "Proxied transactions waiting for a final response.",
		}),
		endedBySipedge: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_dialogs_ended_total", Help: "Dialogs sipedge ended itself with BYE on both legs, by reason.",
		}, []string{"reason"}),
		dialogsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_dialogs_active", Help: "Dialogs established through this instance and not yet ended here.",
		}),
		strippedHeaders: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_trusted_headers_stripped_total", Help: "X-Sipedge-* headers removed from messages of untrusted sources.",
		}),
		sdpRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_sip_sdp_rejected_total", Help: "Messages whose SDP could not be anchored, by what was done (488, passed).",
		}, []string{"action"}),
		orderWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_order_waits_total", Help: "Requests held until an earlier request of their dialog was handed on.",
		}),
		orderTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_order_timeouts_total", Help: "Requests that stopped waiting for an earlier request of their dialog after 200 ms.",
		}),
		orderEarly: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_order_early_responses_total", Help: "Provisional responses relayed ahead of a later response of their INVITE transaction that reached the relay first (sipgo passes responses up on goroutines of their own).",
		}),
		rawACKs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_sip_acks_raw_total", Help: "ACKs of 2xx answers forwarded from their bytes, without parsing or a transaction (a subset of the ACK requests counted).",
		}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_proxy_failover_total", Help: "New calls retried on the next node of the ring, by why their node failed them (timeout, transport, 408, 5xx, node_down).",
		}, []string{"reason"}),
		failoverLate: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_proxy_failover_late_answers_total", Help: "2xx answers on a branch no longer relayed (after failover or the caller's CANCEL), ended with ACK and BYE.",
		}),
	}
	for _, reason := range []string{failTimeout, failTransport, fail408, fail5xx, failNodeDown} {
		m.failovers.WithLabelValues(reason)
	}
	m.notSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_sip_messages_not_sent_total", Help: "Messages sipedge did not send or relay, by reason (too_large, write_error, connection_gone, response_too_large, no_transport).",
	}, []string{"reason"})
	m.tcpClosed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_sip_tcp_closed_total", Help: "Accepted TCP connections closed, by reason (idle, header_timeout, frame_timeout, peer_closed, framing, too_large, unparsable, per_source_limit, other).",
	}, []string{"reason"})
	m.tcpOpen = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sipedge_sip_tcp_connections", Help: "Accepted TCP connections open.",
	})
	m.dnsRefused = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sipedge_sip_dns_refused_total", Help: "DNS queries refused because dns_lookups is off.",
	}, func() float64 { return float64(m.dnsCount.Load()) })
	for _, meth := range knownMethods {
		m.requests[meth] = reqVec.WithLabelValues(string(meth))
		m.responses[meth] = classCounters(resVec, string(meth))
	}
	m.otherRequests = reqVec.WithLabelValues("other")
	m.otherResp = classCounters(resVec, "other")
	m.sipgoErrors = m.malformed.WithLabelValues("unparsable")
	if err := m.trustMetrics.register(reg); err != nil {
		return nil, err
	}
	if err := m.stateless.register(reg); err != nil {
		return nil, err
	}
	m.dialogsEnded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_dialogs_closed_total", Help: "Dialogs set up here that ended, by how the end was learnt (bye, elsewhere).",
	}, []string{"how"})
	m.byeIgnored = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_dialogs_bye_ignored_total", Help: "BYEs that ended no dialog set up here, by reason (unknown, ended, refused).",
	}, []string{"reason"})
	for _, c := range []prometheus.Collector{m.dialogsEnded, m.byeIgnored} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register proxy metrics: %w", err)
		}
	}
	for _, c := range []prometheus.Collector{reqVec, resVec, m.malformed, m.badRoutes, m.placementRouted, m.placementHeld, m.forwardErrors, m.txActive, m.dialogsActive, m.endedBySipedge, m.strippedHeaders, m.sdpRejected, m.orderWaits, m.orderTimeouts, m.orderEarly, m.rawACKs, m.failovers, m.failoverLate, m.notSent, m.tcpClosed, m.tcpOpen, m.dnsRefused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register proxy metrics: %w", err)
		}
	}
	return m, nil
}

func classCounters(vec *prometheus.CounterVec, method string) *[6]prometheus.Counter {
	var cs [6]prometheus.Counter
	for i, c := range classes {
		cs[i] = vec.WithLabelValues(method, c)
	}
	return &cs
}

func (m *metrics) countRequest(method sip.RequestMethod) {
	if c, ok := m.requests[method]; ok {
		c.Inc()
		return
	}
	m.otherRequests.Inc()
}

func (m *metrics) countResponse(res *sip.Response) {
	class := res.StatusCode/100 - 1
	if class < 0 || class > 5 {
		return
	}
	cs := m.otherResp
	if cseq := res.CSeq(); cseq != nil {
		if c, ok := m.responses[cseq.MethodName]; ok {
			cs = c
		}
	}
	cs[class].Inc()
}

// trustMetrics count what node trust (trust.go) and route secrets refuse.
type trustMetrics struct {
	// nodeAuthFailures counts X-Sipedge-* requests from a trusted address
	// whose proof failed, by nodeauth.Reason.
	nodeAuthFailures *prometheus.CounterVec
	// nodeCallsRefused counts node calls answered 403, by reason.
	nodeCallsRefused *prometheus.CounterVec
	// routeOldSecret counts routes opened with a secret other than the
	// current one: when it stops rising, the previous secret can go.
	routeOldSecret prometheus.Counter
}

func (t *trustMetrics) register(reg prometheus.Registerer) error {
	t.nodeAuthFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_sip_node_auth_failures_total", Help: "Requests with X-Sipedge-* headers from a node or trusted network without valid X-Sipedge-Auth, by reason.",
	}, []string{"reason"})
	t.nodeCallsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipedge_sip_node_calls_refused_total", Help: "INVITEs with X-Sipedge-Conference answered 403 (no proof they come from a media node), by reason.",
	}, []string{"reason"})
	t.routeOldSecret = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sipedge_sip_route_old_secret_total", Help: "In-dialog requests whose route was made with a previous route secret (rotation).",
	})
	for _, c := range []prometheus.Collector{t.nodeAuthFailures, t.nodeCallsRefused, t.routeOldSecret} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register proxy trust metrics: %w", err)
		}
	}
	return nil
}

// statelessMetrics count the stateless reject path (stateless.go); its
// answers are in sipedge_sip_responses_total too.
type statelessMetrics struct {
	answers prometheus.Counter // new dialogs answered with no transaction
	acks    prometheus.Counter // ACKs of those answers absorbed
}

func (s *statelessMetrics) register(reg prometheus.Registerer) error {
	s.answers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sipedge_sip_stateless_answers_total", Help: "New dialogs rejected statelessly (503 or 302 with no transaction: deserviced, shutting down, no node, flood limit).",
	})
	s.acks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sipedge_sip_stateless_acks_total", Help: "ACKs of stateless answers absorbed (recognised by their To tag; never forwarded).",
	})
	for _, c := range []prometheus.Collector{s.answers, s.acks} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register proxy stateless metrics: %w", err)
		}
	}
	return nil
}
