package media

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/media/policy"

	"github.com/sipedge/sipedge/media/relay"
	"github.com/sipedge/sipedge/media/sdpx"
)

type metrics struct {
	sessions      prometheus.Gauge
	present       prometheus.Gauge
	conferences   prometheus.Gauge
	ended         *prometheus.CounterVec
	mediaTimeouts prometheus.Counter
	sdpErrors     *prometheus.CounterVec
	redisErrors   prometheus.Counter
	badValues     prometheus.Counter
	writes        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sipedge_media_sessions_active",
			Help: "Calls whose media this instance anchors."}),
		present: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sipedge_media_participants_present",
			Help: "Participants on this instance whose endpoint RTP flows."}),
		conferences: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sipedge_media_conferences_active",
			Help: "Conferences with at least one participant on this instance."}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sipedge_conferences_ended_total",
			Help: "Conferences ended, by rule (counted once, by the instance that acted first)."}, []string{"rule"}),
		mediaTimeouts: prometheus.NewCounter(prometheus.CounterOpts{Name: "sipedge_media_timeouts_total",
			Help: "Participants ended because their endpoint sent no RTP for media_timeout."}),
		sdpErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sipedge_media_sdp_errors_total",
			Help: "SDP bodies that could not be anchored, by class."}, []string{"class"}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "sipedge_media_redis_errors_total",
			Help: "Redis operations of the media manager that failed."}),
		badValues: prometheus.NewCounter(prometheus.CounterOpts{Name: "sipedge_media_bad_values_total",
			Help: "Bad settings, conference settings or participant records ignored."}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sipedge_media_participant_writes_total",
			Help: "Participant record changes sent to Redis, by op (write: joined or presence changed; remove: left)."}, []string{"op"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, r := range []string{string(policy.RuleGuestsOnly), string(policy.RuleLastParticipant), string(policy.RuleEmpty), "operator"} {
		m.ended.WithLabelValues(r) // every rule exported from the start
	}
	for _, c := range []prometheus.Collector{m.sessions, m.present, m.conferences, m.ended, m.mediaTimeouts,
		m.sdpErrors, m.redisErrors, m.badValues, m.writes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// errorClass labels an SDP error for the metric.
func errorClass(err error) string {
	switch {
	case errors.Is(err, sdpx.ErrUnsupported):
		return "unsupported"
	case errors.Is(err, sdpx.ErrUnparsable):
		return "unparsable"
	case errors.Is(err, relay.ErrExhausted):
		return "no_ports"
	case errors.Is(err, ErrCallEnded):
		return "ended"
	default:
		return "other"
	}
}
