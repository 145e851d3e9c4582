package admission

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/logging"
	"github.com/sipedge/sipedge/ring"
)

// SnapshotSource yields the current ring snapshot (ring.Watcher does).
type SnapshotSource interface {
	Snapshot() *ring.Snapshot
}

// ClusterSource yields the current cluster state (StateWatcher does).
type ClusterSource interface {
	Cluster() *Cluster
}

// Options configures an Admitter.
type Options struct {
	Self             Self
	HeartbeatTimeout time.Duration // an instance older than this is not alive
	RedisTimeout     time.Duration // bound on the sticky lookup on the SIP path
	// RedirectDeserviced: while deserviced, answer new dialogs 302 to the
	// least-loaded normal instance of the site (deservice_answer 302).
	RedirectDeserviced bool
	Ledger             *Ledger // writes the dialog counts; nil: counts not kept
	Now                func() time.Time
}

// Admitter gathers the state a decision needs and records placements.
type Admitter struct {
	nodes   SnapshotSource
	cluster ClusterSource
	confs   *ConfStore
	opts    Options
	log     zerolog.Logger
	metrics *metrics

	verdict  atomic.Pointer[judged] // cached instance verdict
	mu       sync.Mutex             // serialises recomputing and logging changes
	shutdown atomic.Bool            // SetShuttingDown (shutdown.go)

	rejectLogs sync.Map // reason → *logging.Sampled: rejections logged, sampled per reason
}

// judged is an instance verdict with what it was computed from.
type judged struct {
	v       InstanceVerdict
	cluster *Cluster
	at      time.Time
}

// verdictTTL bounds how stale the cached instance verdict may be: heartbeats
// age even when the cluster snapshot does not change.
const verdictTTL = 200 * time.Millisecond

// NewAdmitter wires an Admitter; metrics are registered on reg.
func NewAdmitter(nodes SnapshotSource, cluster ClusterSource, confs *ConfStore, opts Options, log zerolog.Logger, reg prometheus.Registerer) (*Admitter, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Admitter{nodes: nodes, cluster: cluster, confs: confs, opts: opts, log: log, metrics: m}, nil
}

// Instance returns this instance's current verdict (deserviced, rejecting,
// held back), recomputed when the state changed or verdictTTL passed.
func (a *Admitter) Instance() InstanceVerdict {
	c, now := a.cluster.Cluster(), a.opts.Now()
	if j := a.verdict.Load(); j != nil && j.cluster == c && now.Sub(j.at) < verdictTTL && j.v.ShuttingDown == a.shutdown.Load() {
		return j.v
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	v := a.withShutdown(JudgeInstance(a.opts.Self, c, now, a.opts.HeartbeatTimeout))
	prev := a.verdict.Load()
	a.verdict.Store(&judged{v: v, cluster: c, at: now})
	if prev == nil || prev.v.Reject != v.Reject || prev.v.HeldBack != v.HeldBack || prev.v.ShuttingDown != v.ShuttingDown {
		a.logVerdict(v)
	}
	return v
}

func (a *Admitter) logVerdict(v InstanceVerdict) {
	switch {
	case v.ShuttingDown:
		a.log.Warn().Msg("instance shutting down: new dialogs answered 503, in-dialog traffic passes")
	case v.Reject:
		a.log.Warn().Strs("profiles", v.Profiles).Strs("standby", v.Standby).
			Msg("instance deserviced: new dialogs answered 503, in-dialog traffic passes")
	case v.HeldBack && v.Exempt:
		a.log.Warn().Strs("profiles", v.Profiles).Msg("instance deserviced but listed in exceptions: deservice held back")
	case v.HeldBack:
		a.log.Warn().Strs("profiles", v.Profiles).
			Msg("instance deserviced but it is the last normal instance of its site: deservice held back")
	default:
		a.log.Info().Msg("instance in normal service")
	}
}

// Admit decides where a new dialog goes. A Redis failure on the sticky
// lookup does not block the call: it falls back to the ring (fail-static).
func (a *Admitter) Admit(ctx context.Context, req Request) Verdict {
	st := State{Instance: a.Instance(), Nodes: a.nodes.Snapshot(), RetryAfter: a.cluster.Cluster().Settings.RetryAfter,
		Redirect: a.opts.RedirectDeserviced}
	if !st.Instance.Reject && !req.UsesAOR() && req.ConfID != "" {
		st.Sticky = a.stickyNode(ctx, req, st.Nodes) // sticky.go
	}
	v := Decide(req, st)
	if !v.Admit {
		a.rejected(req, v) // immediate.go
		return v
	}
	if req.NewDialog() { // a routed in-dialog request is no placement
		a.metrics.placements.WithLabelValues(v.Placement).Inc()
	}
	return v
}

// DialogStarted records a dialog of conference confID established here
// on node: the counts of both are rewritten from the dialog set (the
// Ledger, asynchronously).
func (a *Admitter) DialogStarted(confID, node string) { a.touch(confID, node) }

// DialogEnded records the end of a dialog this instance set up and has
// already removed from its dialog set: as DialogStarted, the counts of its
// conference and node are rewritten from the dialog set.
func (a *Admitter) DialogEnded(confID, node string) { a.touch(confID, node) }

func (a *Admitter) touch(confID, node string) {
	if a.opts.Ledger != nil {
		a.opts.Ledger.Touch(confID, node)
	}
}

// DialogEndedElsewhere tells owner, the instance that set the dialog key
// up, that its dialog ended through this one, and re-derives the counts of
// its conference and node: when owner is gone (its share expired) they
// drop now, without waiting for it.
func (a *Admitter) DialogEndedElsewhere(_ context.Context, owner, confID, node, callID, key string) {
	if a.opts.Ledger == nil {
		return
	}
	a.log.Debug().Str("call_id", callID).Str("owner", owner).Str("conf_id", confID).
		Msg("dialog of another instance ended here: noted for it")
	a.opts.Ledger.NoteEnded(owner, key)
	a.opts.Ledger.Touch(confID, node)
}

// Calls is the number of active conference dialogs this instance
// established, counted cluster-wide in Redis.
func (a *Admitter) Calls(ctx context.Context) (int, error) {
	return a.confs.InstanceCalls(ctx, a.opts.Self.Name)
}

// rejectLog is the sampled logger of one rejection reason: under a flood
// (every new dialog of a deserviced instance answered 503) the line is
// written for the first rejections of each second and then 1 in 1000,
// each with how many were left out; sipedge_admission_rejects_total stays
// exact. Reasons are Decide's few constants, so the map stays small.
func (a *Admitter) rejectLog(reason string) *logging.Sampled {
	if l, ok := a.rejectLogs.Load(reason); ok {
		return l.(*logging.Sampled)
	}
	l, _ := a.rejectLogs.LoadOrStore(reason, logging.NewSampled(a.log))
	return l.(*logging.Sampled)
}
