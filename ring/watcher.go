package ring

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
)

// WatcherOptions configures a Watcher.
type WatcherOptions struct {
	ResyncInterval time.Duration // periodic full reload (default 500ms so a plain redis-cli HSET applies < 1s)
	Health         HealthOptions
	Now            func() time.Time // injected clock, default time.Now
}

// DefaultResyncInterval keeps a change made with plain redis-cli (no
// publish) under the 1 s of SPEC §2 on every instance.
const DefaultResyncInterval = 500 * time.Millisecond

// minLoadTimeout bounds one reload so a hung Redis cannot stall the loop;
// go-redis's own timeouts would otherwise allow several seconds of retries.
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
	snap   atomic.Pointer[Snapshot]
	kick   chan struct{} // reload requests from pub/sub, coalesced

	mu       sync.Mutex        // serialises builds and guards the fields below
	nodes    []Node            // valid nodes of the last successful load
	readAt   time.Time         // when they were read
	nodeErrs map[string]string // node key -> last logged error, to log once per change
	redisErr string            // last logged Redis error, "" while Redis answers
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
		probes: newProbes(opts.Health.DownAfter, opts.Health.UpAfter),
		kick:   make(chan struct{}, 1), nodeErrs: map[string]string{}}
	// An empty snapshot until the first load: Snapshot is never nil.
	empty := build(nil, nil, nil, time.Time{}, opts.Health)
	empty.version = 0
	w.snap.Store(empty)
	return w, nil
}

// Snapshot returns the current snapshot without locking; never nil.
func (w *Watcher) Snapshot() *Snapshot { return w.snap.Load() }

// Start does the first load synchronously, so an instance does not accept
// calls before it knows its nodes. It fails when Redis does.
func (w *Watcher) Start(ctx context.Context) error {
	if err := w.reload(ctx); err != nil {
		return fmt.Errorf("ring: first load: %w", err)
	}
	return nil
}

// Run keeps the snapshot current until ctx is done: a reload on every
// message on the events channel, a full resync every ResyncInterval (which
// also catches plain redis-cli writes and re-judges heartbeats), and OPTIONS
// probes when enabled. Redis errors never stop it; it returns nil once ctx
// is done and its goroutines have ended.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { w.subscribe(ctx) })
	if w.opts.Health.ProbeInterval > 0 {
		wg.Go(func() { w.probeLoop(ctx) })
	}
	t := time.NewTicker(w.opts.ResyncInterval)
	defer t.Stop()
	for {
		_ = w.reload(ctx) // errors are counted and logged inside
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-w.kick:
		}
	}
}

// subscribe turns any message on the events channel into a reload. go-redis
// resubscribes by itself after a connection loss; the confirmation of each
// (re)subscription also triggers a reload, covering events missed meanwhile.
func (w *Watcher) subscribe(ctx context.Context) {
	ps := w.rdb.Subscribe(ctx, w.k.Events())
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			select {
			case w.kick <- struct{}{}:
			default: // a reload is already pending; it will see this change too
			}
		}
	}
}

// reload reads the nodes and rebuilds the snapshot. On a Redis error the
// current snapshot stays (fail-static) and the error is counted and logged.
func (w *Watcher) reload(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, max(minLoadTimeout, w.opts.ResyncInterval))
	nodes, errs, err := Load(lctx, w.rdb, w.k)
	cancel()
	now := w.opts.Now()

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
	w.logInvalidLocked(errs)
	w.nodes, w.readAt = nodes, now
	w.m.lastLoad.Set(float64(now.UnixMilli()) / 1e3)
	w.m.nodes.WithLabelValues("invalid").Set(float64(len(errs)))
	known := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		known[n.Name] = true
	}
	w.probes.retain(known)
	w.rebuildLocked()
	return nil
}

// logInvalidLocked logs each invalid node once per distinct error, so a bad
// value left in Redis does not log twice a second on every instance.
func (w *Watcher) logInvalidLocked(errs []error) {
	seen := make(map[string]bool, len(errs))
	for _, err := range errs {
		var ne *NodeError
		key, field := "", ""
		if errors.As(err, &ne) {
			key, field = w.k.Node(ne.Node), ne.Field
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

// rebuildLocked judges the last loaded nodes with the current probe state.
// Heartbeats are judged at the time they were read: while Redis is down
// nothing new can be known about them, and ageing them against the wall
// clock would empty the ring exactly when fail-static matters.
func (w *Watcher) rebuildLocked() {
	prev := w.snap.Load()
	s := build(prev, w.nodes, w.probes.up, w.readAt, w.opts.Health)
	w.snap.Store(s)
	healthy := 0
	for _, st := range s.statuses {
		if st.Healthy {
			healthy++
		}
	}
	w.m.nodes.WithLabelValues("healthy").Set(float64(healthy))
	w.m.nodes.WithLabelValues("unhealthy").Set(float64(len(s.statuses) - healthy))
	if s.version != prev.version {
		w.m.rebuilds.Inc()
		ev := w.log.Info().Uint64("version", s.version).Int("members", s.ring.Len())
		names := make([]string, 0, s.ring.Len())
		for _, m := range s.ring.members {
			names = append(names, m.name)
		}
		ev.Strs("nodes", names).Msg("media node ring changed")
	}
}
