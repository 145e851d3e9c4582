package ring

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
)

// WatcherOptions configures a Watcher.
type WatcherOptions struct {
	// Source is the process's one contract watcher: the ring reads nodes,
	// node_calls, deservice profiles and settings from its snapshots and
	// rebuilds after each of its reloads. It must be started (first load)
	// before Start and run by its owner. nil: the Watcher reads Redis
	// through a contract.Watcher of its own, started and run with it
	// (tests and tools).
	Source         *contract.Watcher
	ResyncInterval time.Duration // own Source only: periodic full reload (default 500ms so a plain redis-cli HSET applies < 1s)
	Health         HealthOptions
	// Policy overrides the deservice profiles and settings of the Source's
	// snapshot; nil = the snapshot's (the same reload's, so a deserviced
	// node is never judged without its profile).
	Policy PolicySource
	Now    func() time.Time // injected clock, default time.Now
	// EmptyGrace keeps the last known nodes this long when the node set is
	// read empty after it held nodes (Redis restarted empty, a failover to
	// an empty replica) until nodes register again; 0 accepts it at once.
	EmptyGrace time.Duration
}

// DefaultResyncInterval keeps a change made with plain redis-cli (no
// publish) under the 1 s of SPEC §2 on every instance.
const DefaultResyncInterval = contract.DefaultEvery

// minLoadTimeout bounds the transition writes of one reload so a hung
// Redis cannot stall the loop.
const minLoadTimeout = 2 * time.Second

// Watcher keeps a Snapshot of the media nodes current. Readers call
// Snapshot from any goroutine; Start and Run drive the updates.
type Watcher struct {
	rdb    redis.UniversalClient
	k      keys.Keys
	opts   WatcherOptions
	pinger Pinger
	log    zerolog.Logger
	m      *metrics
	probes *probes
	sus    *suspects
	snap   atomic.Pointer[Snapshot]
	src    *contract.Watcher
	ownSrc bool            // src is this Watcher's own: Start and Run drive it
	update <-chan struct{} // a reload of src happened

	mu         sync.Mutex         // serialises builds and guards the fields below
	applied    *contract.Snapshot // the source snapshot last applied
	nodes      []Node             // valid nodes of the last successful load
	calls      map[string]int     // node_calls of that load
	policy     Policy             // policy at that load
	readAt     time.Time          // when they were read
	nodeErrs   map[string]string  // node key -> last logged error, to log once per change
	callErrs   map[string]string  // node -> last logged bad node_calls value
	redisErr   string             // last logged Redis error, "" while Redis answers
	markErr    string             // last logged error writing a transition
	drainGauge map[string]bool    // nodes with a sipedge_node_drain_calls series
	listed     map[string]bool    // nodes of the last snapshot (their probe series)
	emptySince time.Time          // first load that found the node set empty while nodes were known

	markMu sync.Mutex
	marked map[string]mark // transitions this watcher wrote, until a snapshot read after them shows them
}

// mark is a service transition this watcher wrote. A contract snapshot
// with a version up to upTo may have been read before the write landed
// (loads are serialised: the one in progress when the write returned gets
// the next version), so it is taken as showing the write, not as a reason
// to write it again: under load several reloads read the node before the
// first write landed, and each ran the script once more for nothing.
type mark struct {
	out  bool      // went out of service (drain_started written); false: back in
	at   time.Time // the drain_started or restored_at it wrote or found
	upTo uint64
}

// NewWatcher wires a Watcher and registers its metrics on reg. pinger may
// be nil only when probing is disabled.
func NewWatcher(rdb redis.UniversalClient, k keys.Keys, opts WatcherOptions, pinger Pinger, log zerolog.Logger, reg prometheus.Registerer) (*Watcher, error) {
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = DefaultResyncInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Health = opts.Health.withDefaults()
	if opts.Health.ProbeInterval > 0 && pinger == nil {
		return nil, errors.New("ring: probing enabled but no Pinger given")
	}
	if reg == nil {
		reg = prometheus.NewRegistry() // metrics kept but not exported
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	w := &Watcher{rdb: rdb, k: k, opts: opts, pinger: pinger, log: log, m: m,
		probes:   newProbes(opts.Health.DownAfter, opts.Health.UpAfter),
		nodeErrs: map[string]string{}, callErrs: map[string]string{},
		drainGauge: map[string]bool{}, src: opts.Source}
	if w.src == nil {
		// Its metrics are kept but not exported: the process's shared
		// watcher exports them.
		if w.src, err = contract.NewWatcher(rdb, k, contract.Options{Every: opts.ResyncInterval, Now: opts.Now},
			log, nil); err != nil {
			return nil, err
		}
		w.ownSrc = true
	}
	w.update = w.src.Notify()
	w.sus = newSuspects(opts.Health.SuspectHold)
	// An empty snapshot until the first load: Snapshot is never nil.
	empty := build(nil, Inputs{Health: opts.Health})
	empty.version = 0
	w.snap.Store(empty)
	return w, nil
}

// Snapshot returns the current snapshot without locking; never nil.
func (w *Watcher) Snapshot() *Snapshot { return w.snap.Load() }

// Refresh asks for a reload of the contract soon, without waiting for it.
func (w *Watcher) Refresh() { w.src.Refresh() }

// Start applies the source's first load (doing it first when the source is
// this Watcher's own), so an instance does not accept calls before it knows
// its nodes. It fails when Redis does.
func (w *Watcher) Start(ctx context.Context) error {
	if err := w.reload(ctx); err != nil {
		return fmt.Errorf("ring: first load: %w", err)
	}
	return nil
}

// Run keeps the snapshot current until ctx is done: a rebuild after every
// reload of the contract (on every message on the events channel and every
// resync interval, which also catches plain redis-cli writes and re-judges
// heartbeats), and OPTIONS probes when enabled. Redis errors never stop it;
// it returns nil once ctx is done and its goroutines have ended.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if w.opts.Health.ProbeInterval > 0 {
		wg.Go(func() { w.probeLoop(ctx) })
	}
	if w.ownSrc {
		wg.Go(func() { _ = w.src.Run(ctx) })
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.update:
			_ = w.apply(ctx) // errors are counted and logged inside
		}
	}
}

// reload reloads an own source, then applies its snapshot.
func (w *Watcher) reload(ctx context.Context) error {
	if w.ownSrc {
		_ = w.src.Reload(ctx) // its error is the source's Err, handled by apply
	}
	return w.apply(ctx)
}

// policyOf is the node rules' input from one contract snapshot.
func (w *Watcher) policyOf(s *contract.Snapshot) Policy {
	if w.opts.Policy != nil {
		return w.opts.Policy.NodePolicy()
	}
	return Policy{DeservicedServers: s.DeservicedServers(), SlowStart: s.Settings.SlowStart,
		DrainTimeout: s.Settings.DrainTimeout}
}

// apply takes the source's current snapshot: records service transitions
// and rebuilds the ring. While the source's last reload failed, the current
// ring stays (fail-static) and the error is counted and logged.
func (w *Watcher) apply(ctx context.Context) error {
	cs, err := w.src.Snapshot(), w.src.Err()
	if err == nil && cs.Version == 0 {
		err = errors.New("the Redis contract was never loaded")
	}
	var nodes []Node
	var errs []error
	var calls map[string]int
	var policy Policy
	now := w.opts.Now()
	var markErr error
	if err == nil {
		// The snapshot is shared and immutable: transitions update a copy.
		nodes, calls, policy = slices.Clone(cs.Nodes), cs.Calls, w.policyOf(cs)
		for _, name := range slices.Sorted(maps.Keys(cs.NodeErrs)) {
			errs = append(errs, cs.NodeErrs[name])
		}
		lctx, cancel := context.WithTimeout(ctx, max(minLoadTimeout, w.opts.ResyncInterval))
		markErr = w.recordTransitions(lctx, nodes, policy, now, cs.Version)
		cancel()
	}
	badCalls := map[string]string{}
	if err == nil {
		for _, fe := range cs.CallErrs {
			badCalls[fe.Field] = fe.Value
		}
		now = cs.ReadAt
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return err // shutting down, not a Redis fault
		}
		w.m.redisErrors.WithLabelValues("load").Inc()
		if msg := err.Error(); msg != w.redisErr {
			w.redisErr = msg
			w.log.Error().Err(err).Str("key", w.k.Nodes()).
				Msg("cannot read media nodes from Redis; keeping the last known ring")
		}
		return err
	}
	if w.redisErr != "" {
		w.redisErr = ""
		w.log.Info().Msg("media nodes readable from Redis again")
	}
	if markErr != nil && ctx.Err() == nil {
		w.m.redisErrors.WithLabelValues("mark").Inc()
		if msg := markErr.Error(); msg != w.markErr {
			w.markErr = msg
			w.log.Error().Err(markErr).Msg("cannot record a media node service transition; retrying at the next reload")
		}
	} else if markErr == nil {
		w.markErr = ""
	}
	if w.keepThroughEmptyLocked(nodes, errs, now) {
		return nil
	}
	w.logInvalidLocked(errs)
	w.logBadCallsLocked(badCalls)
	w.nodes, w.calls, w.policy, w.readAt, w.applied = nodes, calls, policy, now, cs
	w.m.lastLoad.Set(float64(now.UnixMilli()) / 1e3)
	w.m.nodes.WithLabelValues("invalid").Set(float64(len(errs)))
	known := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		known[n.Name] = true
	}
	w.probes.retain(known)
	w.sus.retain(known)
	w.rebuildLocked()
	return nil
}

// keepThroughEmptyLocked reports whether this load, which found no node at
// all, is set aside: an empty Redis is treated like a lost one for up to
// EmptyGrace, so calls keep going to the last known ring while the nodes
// register again (they do at their next heartbeat).
func (w *Watcher) keepThroughEmptyLocked(nodes []Node, errs []error, now time.Time) bool {
	empty := len(nodes) == 0 && len(errs) == 0
	switch {
	case !empty:
		if !w.emptySince.IsZero() {
			w.log.Info().Int("nodes", len(nodes)).Stringer("after", now.Sub(w.emptySince)).
				Msg("media nodes registered again after an empty node set")
			w.emptySince = time.Time{}
		}
		return false
	case len(w.nodes) == 0 || w.opts.EmptyGrace <= 0:
		return false
	case w.emptySince.IsZero():
		w.emptySince = now
		w.m.redisErrors.WithLabelValues("empty").Inc()
		w.log.Warn().Str("key", w.k.Nodes()).Int("known", len(w.nodes)).Stringer("grace", w.opts.EmptyGrace).
			Msg("media node set is empty (Redis restarted empty?): keeping the last known ring until nodes register again")
		return true
	case now.Sub(w.emptySince) < w.opts.EmptyGrace:
		return true
	default:
		w.log.Warn().Str("key", w.k.Nodes()).Stringer("grace", w.opts.EmptyGrace).
			Msg("media node set still empty after the grace period: ring emptied")
		w.emptySince = time.Time{}
		return false
	}
}

// logInvalidLocked logs each invalid node once per distinct error, so a bad
// value left in Redis does not log twice a second on every instance.
func (w *Watcher) logInvalidLocked(errs []error) {
	seen := make(map[string]bool, len(errs))
	for _, err := range errs {
		var fe *contract.FieldError
		key, field := "", ""
		if errors.As(err, &fe) {
			key, field = fe.Key, fe.Field
		}
		seen[key] = true
		if w.nodeErrs[key] == err.Error() {
			continue
		}
		w.nodeErrs[key] = err.Error()
		w.m.nodeErrors.Inc()
		w.log.Warn().Err(err).Str("key", key).Str("field", field).
			Msg("invalid media node ignored until fixed")
	}
	for key := range w.nodeErrs {
		if !seen[key] { // fixed or removed: a later error is news again
			delete(w.nodeErrs, key)
		}
	}
}

// recordTransitions writes drain_started for nodes that went out of service
// and clears it (setting restored_at) for those back in service, and
// updates nodes to match, so this very reload already ramps a returning
// node from 0. Nothing is written while nothing changes. A failed write is
// retried at the next reload, and the node judged as read; the first error
// is returned.
func (w *Watcher) recordTransitions(ctx context.Context, nodes []Node, p Policy, now time.Time, version uint64) (first error) {
	w.markMu.Lock()
	defer w.markMu.Unlock()
	for i := range nodes {
		n := &nodes[i]
		out := outReason(*n, p)
		m, marked := w.marked[n.Name]
		switch {
		case marked && version > m.upTo:
			delete(w.marked, n.Name) // read after the write: the snapshot says what is true
		case marked && m.out:
			n.DrainStarted = m.at // may have been read before the write landed
		case marked:
			n.DrainStarted, n.RestoredAt = time.Time{}, m.at
		}
		var err error
		switch {
		case out != "" && n.DrainStarted.IsZero():
			var wrote bool
			if wrote, err = markOut(ctx, w.rdb, w.k, n.Name, now); err == nil {
				// Another instance may have written an earlier time; the
				// next reload reads it.
				n.DrainStarted = now
				w.noteMark(n.Name, mark{out: true, at: now})
				w.log.Debug().Str("node", n.Name).Str("reason", out).Bool("wrote", wrote).Msg("drain start recorded")
			}
		case out == "" && !n.DrainStarted.IsZero():
			var restored bool
			var at time.Time
			if restored, at, err = markIn(ctx, w.rdb, w.k, n.Name, now); err == nil {
				n.DrainStarted, n.RestoredAt = time.Time{}, at
				w.noteMark(n.Name, mark{at: at})
				w.log.Debug().Str("node", n.Name).Bool("wrote", restored).Msg("return to service recorded")
			}
		}
		if first == nil {
			first = err
		}
	}
	for name := range w.marked { // a node removed meanwhile
		if !slices.ContainsFunc(nodes, func(n Node) bool { return n.Name == name }) {
			delete(w.marked, name)
		}
	}
	return first
}

// noteMark records a transition just written; markMu is held.
func (w *Watcher) noteMark(node string, m mark) {
	m.upTo = w.src.Snapshot().Version + 1 // a load in progress may have read before it
	if w.marked == nil {
		w.marked = map[string]mark{}
	}
	w.marked[node] = m
}

// logBadCallsLocked logs each bad node_calls value once per change.
func (w *Watcher) logBadCallsLocked(bad map[string]string) {
	for node, v := range bad {
		if old, ok := w.callErrs[node]; ok && old == v {
			continue
		}
		w.callErrs[node] = v
		w.m.nodeErrors.Inc()
		w.log.Warn().Str("key", w.k.NodeCalls()).Str("field", node).Str("value", v).
			Msg("invalid call count counted as 0 until fixed")
	}
	for node := range w.callErrs {
		if _, ok := bad[node]; !ok {
			delete(w.callErrs, node)
		}
	}
}

// rebuildLocked judges the last loaded nodes with the current probe state.
// Heartbeats and slow start are judged at the time the nodes were read:
// while Redis is down nothing new can be known about them, and ageing them
// against the wall clock would empty the ring exactly when fail-static
// matters.
func (w *Watcher) rebuildLocked() {
	prev := w.snap.Load()
	// Suspicion is this instance's own, recent observation: judged on the
	// wall clock, not at the time Redis was read.
	now := w.opts.Now()
	s := build(prev, Inputs{Nodes: w.nodes, ProbeUp: w.probes.up, Now: w.readAt, Health: w.opts.Health,
		Policy: w.policy, Calls: w.calls, Suspect: func(name string) bool { return w.sus.active(name, now) }})
	w.m.suspectNodes.Set(float64(w.sus.count(now)))
	w.snap.Store(s)
	w.updateGaugesLocked(s)
	w.logTransitions(prev, s)
	if s.version != prev.version {
		w.m.rebuilds.Inc()
		lvl := zerolog.InfoLevel
		if rampOnly(prev, s) {
			lvl = zerolog.DebugLevel // at every reload while a node ramps up
		}
		names := make([]string, 0, s.ring.Len())
		for _, m := range s.ring.members {
			names = append(names, m.name)
		}
		w.log.WithLevel(lvl).Uint64("version", s.version).Int("members", s.ring.Len()).Strs("nodes", names).Msg("media node ring changed")
	}
}

func (w *Watcher) updateGaugesLocked(s *Snapshot) {
	healthy, states := 0, map[string]int{StateNormal: 0, StateDraining: 0, StateMaintenance: 0}
	out := make(map[string]bool, len(w.drainGauge))
	expired := 0
	for _, st := range s.statuses {
		if st.Healthy {
			healthy++
		}
		if st.DrainExpired {
			expired++
		}
		states[st.State]++
		if !st.InService {
			out[st.Node.Name] = true
			w.m.drainCalls.WithLabelValues(st.Node.Name).Set(float64(st.Calls))
		}
	}
	for name := range w.drainGauge {
		if !out[name] {
			w.m.drainCalls.DeleteLabelValues(name)
		}
	}
	w.drainGauge = out
	listed := make(map[string]bool, len(s.statuses))
	for _, st := range s.statuses {
		listed[st.Node.Name] = true
	}
	for name := range w.listed {
		if !listed[name] { // removed: its probe round trips go with it
			w.m.probeRTT.DeletePartialMatch(prometheus.Labels{"node": name})
		}
	}
	w.listed = listed
	w.m.drainsExpired.Set(float64(expired))
	w.m.nodes.WithLabelValues("healthy").Set(float64(healthy))
	w.m.nodes.WithLabelValues("unhealthy").Set(float64(len(s.statuses) - healthy))
	for state, n := range states {
		w.m.states.WithLabelValues(state).Set(float64(n))
	}
}

// logTransitions logs each node whose service state, kept-active or
// drain-expired verdict changed, and on the first sight of a node any that
// is not plainly normal. Calls coming and going on a node kept active move
// it between draining and maintenance; that alone is not logged.
func (w *Watcher) logTransitions(prev, s *Snapshot) {
	for _, st := range s.statuses {
		old, known := prev.Status(st.Node.Name)
		if !known {
			old = NodeStatus{State: StateNormal, InService: true}
		}
		if old.KeptActive == st.KeptActive && old.DrainExpired == st.DrainExpired &&
			(old.State == st.State || st.KeptActive) {
			continue
		}
		ev := w.log.Info().Str("node", st.Node.Name).Str("state", st.State).Int("calls", st.Calls)
		if known {
			ev.Str("from", old.State)
		}
		if st.OutReason != "" {
			ev.Str("reason", st.OutReason)
		}
		if st.KeptActive || old.KeptActive {
			ev.Bool("kept_active", st.KeptActive)
		}
		if st.DrainExpired {
			ev.Bool("drain_expired", true).Stringer("drain_timeout", w.policy.DrainTimeout)
		}
		if st.InService && !old.InService && w.policy.SlowStart > 0 {
			ev.Stringer("slow_start", w.policy.SlowStart)
		}
		ev.Msg("media node state changed")
	}
}

// rampOnly reports whether the ring moved only because nodes ramped up in
// slow start: same nodes, same configured weights, and every change of
// effective weight on a node ramping before or after.
func rampOnly(prev, s *Snapshot) bool {
	if len(prev.statuses) != len(s.statuses) {
		return false
	}
	ramping := func(st NodeStatus) bool { return st.InService && st.Eligible && st.EffectiveWeight < st.Node.Weight }
	for i, st := range s.statuses {
		p := prev.statuses[i]
		if p.Node.Name != st.Node.Name || p.Eligible != st.Eligible || p.Node.Weight != st.Node.Weight ||
			(p.EffectiveWeight != st.EffectiveWeight && !ramping(p) && !ramping(st)) {
			return false
		}
	}
	return true
}
