package admission

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/ring"
)

// SnapshotSource yields the current ring snapshot (ring.Watcher does).
type SnapshotSource interface {
	Snapshot() *ring.Snapshot
}

// Options configures an Admitter.
type Options struct {
	Instance     string        // this instance's name, recorded with placements
	RetryAfter   int           // seconds sent with 503
	RedisTimeout time.Duration // bound on the sticky lookup on the SIP path
	Now          func() time.Time
}

// Admitter gathers the state a decision needs and records placements.
type Admitter struct {
	nodes   SnapshotSource
	confs   *ConfStore
	opts    Options
	log     zerolog.Logger
	metrics *metrics
}

// NewAdmitter wires an Admitter; metrics are registered on reg.
func NewAdmitter(nodes SnapshotSource, confs *ConfStore, opts Options, log zerolog.Logger, reg prometheus.Registerer) (*Admitter, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Admitter{nodes: nodes, confs: confs, opts: opts, log: log, metrics: m}, nil
}

// Admit decides where a new dialog goes. A Redis failure on the sticky
// lookup does not block the call: it falls back to the ring (fail-static).
func (a *Admitter) Admit(ctx context.Context, req Request) Verdict {
	st := State{Nodes: a.nodes.Snapshot(), RetryAfter: a.opts.RetryAfter}
	if !req.UsesAOR() && req.ConfID != "" {
		lctx, cancel := context.WithTimeout(ctx, a.opts.RedisTimeout)
		node, err := a.confs.Node(lctx, req.ConfID)
		cancel()
		if err != nil {
			a.metrics.redisErrors.WithLabelValues("conf_lookup").Inc()
			a.log.Warn().Err(err).Str("call_id", req.CallID).Str("conf_id", req.ConfID).
				Msg("sticky placement lookup failed; placing by ring")
		}
		st.Sticky = node
	}
	v := Decide(req, st)
	if !v.Admit {
		a.metrics.rejects.WithLabelValues(v.Reason).Inc()
		a.log.Warn().Str("call_id", req.CallID).Str("method", req.Method).Str("conf_id", req.ConfID).
			Str("aor", req.AOR).Str("reason", v.Reason).Int("code", v.Code).
			Msg("Participant failed to join conference")
		return v
	}
	a.metrics.placements.WithLabelValues(v.Placement).Inc()
	return v
}

// DialogStarted records a conference dialog established on node.
func (a *Admitter) DialogStarted(ctx context.Context, confID, node, callID string) {
	placed, err := a.confs.DialogStarted(ctx, confID, node, a.opts.Instance, a.opts.Now())
	if err != nil {
		a.metrics.redisErrors.WithLabelValues("conf_start").Inc()
		a.log.Error().Err(err).Str("call_id", callID).Str("conf_id", confID).Msg("placement not recorded")
		return
	}
	if placed != node {
		// Another instance placed the conference first (a race on the very
		// first answer, or a ring change in between): report the split.
		a.log.Warn().Str("call_id", callID).Str("conf_id", confID).Str("node", node).
			Str("placed_on", placed).Msg("conference dialog landed off its placed node")
	}
}

// DialogEnded records the end of a conference dialog.
func (a *Admitter) DialogEnded(ctx context.Context, confID, callID string) {
	left, err := a.confs.DialogEnded(ctx, confID)
	if err != nil {
		a.metrics.redisErrors.WithLabelValues("conf_end").Inc()
		a.log.Error().Err(err).Str("call_id", callID).Str("conf_id", confID).Msg("dialog end not recorded")
		return
	}
	if left == 0 {
		a.log.Info().Str("call_id", callID).Str("conf_id", confID).Msg("conference ended: last dialog gone")
	}
}
