package relay

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// dropReason is why a received packet was not relayed.
type dropReason uint8

const (
	dropInvalid   dropReason = iota // not RTP/RTCP version 2, truncated, oversized
	dropForeign                     // from a source other than the latched or announced one
	dropNoPeer                      // the other side has no address yet or is on hold
	dropSendError                   // writing to the other side failed
	numDropReasons
)

// label values of sipedge_relay_dropped_total, by dropReason
var dropLabels = [numDropReasons]string{"invalid", "foreign", "no_peer", "send_error"}

// Metrics are the relay's Prometheus collectors. Build one per registry and
// share it between all streams; the per-packet counters are resolved once
// here so counting allocates nothing.
type Metrics struct {
	packets *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	dropped *prometheus.CounterVec
	streams prometheus.Gauge
	ports   prometheus.Gauge

	// [from side]: packets from A go a_to_b.
	rtp, rtcp, octets [2]prometheus.Counter
	drop              [numDropReasons]prometheus.Counter
}

// NewMetrics creates the relay metrics and registers them on reg; with a nil
// reg they are counted but not exported.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_relay_packets_total", Help: "Packets relayed, by direction and kind (rtp, rtcp).",
		}, []string{"dir", "kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_relay_bytes_total", Help: "Bytes (UDP payload) relayed, by direction.",
		}, []string{"dir"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipedge_relay_dropped_total", Help: "Packets received on relay ports and not relayed, by reason.",
		}, []string{"reason"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_relay_streams_active", Help: "Relay streams (one m-line of one call) open.",
		}),
		ports: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_relay_ports_in_use", Help: "Relay UDP ports bound by open streams.",
		}),
	}
	for side, dir := range [2]string{"a_to_b", "b_to_a"} {
		m.rtp[side] = m.packets.WithLabelValues(dir, "rtp")
		m.rtcp[side] = m.packets.WithLabelValues(dir, "rtcp")
		m.octets[side] = m.bytes.WithLabelValues(dir)
	}
	for r, label := range dropLabels {
		m.drop[r] = m.dropped.WithLabelValues(label)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.packets, m.bytes, m.dropped, m.streams, m.ports} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register relay metrics: %w", err)
		}
	}
	return m, nil
}
