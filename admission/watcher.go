package admission

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/internal/resync"
	"github.com/sipedge/sipedge/ring"
)

// StateWatcher keeps a Cluster snapshot of profiles, exceptions, instances
// and settings current. Bad values are logged once per change and the last
// good value is kept; a Redis outage keeps the whole last snapshot.
type StateWatcher struct {
	rdb      redis.UniversalClient
	k        keys.Keys
	defaults Settings
	every    time.Duration
	log      zerolog.Logger
	now      func() time.Time

	cur      atomic.Pointer[Cluster]
	onPolicy func()                   // called when the node policy changed (ring reloads at once)
	reloaded atomic.Pointer[Settings] // defaults replaced at run time (SetDefaults)

	mu        sync.Mutex
	logged    map[string]string // "key/field" -> last logged error text
	redisErr  string
	badValues prometheus.Counter
	errors    prometheus.Counter
	stale     prometheus.Gauge
}

// NewStateWatcher returns a watcher; defaults are the settings from the
// YAML file, overridden by sipedge:settings.
func NewStateWatcher(rdb redis.UniversalClient, k keys.Keys, defaults Settings, every time.Duration,
	log zerolog.Logger, reg prometheus.Registerer) (*StateWatcher, error) {
	w := &StateWatcher{rdb: rdb, k: k, defaults: defaults, every: every, log: log, now: time.Now,
		logged: make(map[string]string),
		badValues: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_state_bad_values_total", Help: "Bad values found in Redis (logged once per change, ignored).",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipedge_state_redis_errors_total", Help: "Failed reloads of profiles, exceptions, instances and settings.",
		}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipedge_state_last_load_timestamp_seconds", Help: "When the cluster state was last read from Redis.",
		}),
	}
	for _, c := range []prometheus.Collector{w.badValues, w.errors, w.stale} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register state metrics: %w", err)
		}
	}
	w.cur.Store(&Cluster{Profiles: map[string]Profile{}, Exceptions: map[string]bool{},
		Instances: map[string]Instance{}, Settings: defaults})
	return w, nil
}

// Cluster returns the current snapshot (never nil).
func (w *StateWatcher) Cluster() *Cluster { return w.cur.Load() }

// Start loads once and fails if Redis does.
func (w *StateWatcher) Start(ctx context.Context) error { return w.reload(ctx) }

// Run keeps the snapshot current until ctx is done.
func (w *StateWatcher) Run(ctx context.Context) error {
	resync.Loop(ctx, w.rdb, w.k.Events(), w.every, nil, func(ctx context.Context) { _ = w.reload(ctx) })
	return nil
}

func (w *StateWatcher) reload(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, max(time.Second, w.every))
	defer cancel()
	prev := w.Cluster()
	c, bad, err := load(lctx, w.rdb, w.k, w.currentDefaults(), prev)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		w.errors.Inc()
		if msg := err.Error(); msg != w.redisErr {
			w.redisErr = msg
			w.log.Error().Err(err).Msg("cannot read profiles/instances/settings from Redis; keeping the last known state")
		}
		return err
	}
	if w.redisErr != "" {
		w.redisErr = ""
		w.log.Info().Msg("cluster state readable from Redis again")
	}
	w.logBadLocked(bad)
	c.ReadAt = w.now()
	w.stale.Set(float64(c.ReadAt.UnixMilli()) / 1e3)
	w.cur.Store(c)
	if w.onPolicy != nil && !samePolicy(prev, c) {
		w.onPolicy()
	}
	return nil
}

// OnPolicyChange registers f, called after a reload that changed what the
// node rules read (deservice profiles, slow start, drain timeout), so the
// ring applies a sipedgectl change without waiting for its own resync.
func (w *StateWatcher) OnPolicyChange(f func()) { w.onPolicy = f }

func samePolicy(a, b *Cluster) bool {
	if a.Settings != b.Settings || len(a.Profiles) != len(b.Profiles) {
		return false
	}
	for id, p := range a.Profiles {
		q, ok := b.Profiles[id]
		if !ok || p.Deservice != q.Deservice || strings.Join(p.Servers, ",") != strings.Join(q.Servers, ",") {
			return false
		}
	}
	return true
}

// logBadLocked logs each bad value once per change of its error text.
func (w *StateWatcher) logBadLocked(bad []FieldError) {
	seen := make(map[string]bool, len(bad))
	for _, fe := range bad {
		id := fe.Key + "/" + fe.Field
		seen[id] = true
		if w.logged[id] == fe.Err.Error() {
			continue
		}
		w.logged[id] = fe.Err.Error()
		w.badValues.Inc()
		w.log.Warn().Str("key", fe.Key).Str("field", fe.Field).Err(fe.Err).Msg("bad value in Redis ignored; last good value kept")
	}
	for id := range w.logged {
		if !seen[id] {
			delete(w.logged, id)
		}
	}
}

// load reads the whole cluster state in two round trips.
func load(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, defaults Settings, prev *Cluster) (*Cluster, []FieldError, error) {
	pipe := rdb.Pipeline()
	profIDs := pipe.SMembers(ctx, k.Profiles())
	exc := pipe.SMembers(ctx, k.Exceptions())
	insts := pipe.SMembers(ctx, k.Instances())
	settings := pipe.HGetAll(ctx, k.Settings())
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, fmt.Errorf("read cluster sets: %w", err)
	}
	pipe = rdb.Pipeline()
	profCmds := make(map[string]*redis.MapStringStringCmd, len(profIDs.Val()))
	for _, id := range profIDs.Val() {
		profCmds[id] = pipe.HGetAll(ctx, k.Profile(id))
	}
	instCmds := make(map[string]*redis.MapStringStringCmd, len(insts.Val()))
	for _, n := range insts.Val() {
		instCmds[n] = pipe.HGetAll(ctx, k.Instance(n))
	}
	if len(profCmds)+len(instCmds) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, nil, fmt.Errorf("read profiles and instances: %w", err)
		}
	}
	c := &Cluster{Profiles: make(map[string]Profile, len(profCmds)), Exceptions: make(map[string]bool),
		Instances: make(map[string]Instance, len(instCmds))}
	var bad []FieldError
	for id, cmd := range profCmds {
		if len(cmd.Val()) == 0 {
			continue // listed but no hash: nothing to apply
		}
		p, errs := ParseProfile(id, cmd.Val(), prev.Profiles[id])
		for _, e := range errs {
			e.Key = k.Profile(id)
			bad = append(bad, e)
		}
		c.Profiles[id] = p
	}
	for _, n := range exc.Val() {
		c.Exceptions[n] = true
	}
	for n, cmd := range instCmds {
		in, err := ParseInstance(n, cmd.Val())
		if fe, ok := err.(FieldError); ok {
			fe.Key = k.Instance(n)
			bad = append(bad, fe)
		}
		c.Instances[n] = in
	}
	var errs []FieldError
	c.Settings, errs = ParseSettings(defaults, prev.Settings, settings.Val())
	for _, e := range errs {
		e.Key = k.Settings()
		bad = append(bad, e)
	}
	return c, bad, nil
}

// NodePolicy gives the ring the node rules' inputs from the current state.
func (w *StateWatcher) NodePolicy() ring.Policy {
	c := w.Cluster()
	return ring.Policy{DeservicedServers: c.DeservicedServers(), SlowStart: c.Settings.SlowStart,
		DrainTimeout: c.Settings.DrainTimeout}
}

var _ ring.PolicySource = (*StateWatcher)(nil)
