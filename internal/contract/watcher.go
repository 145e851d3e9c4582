package contract

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
)

// DefaultEvery keeps a change made with plain redis-cli (no publish) under
// the 1 s of SPEC §2 on every instance.
const DefaultEvery = 500 * time.Millisecond

// minLoadTimeout bounds one reload so a hung Redis cannot stall the loop.
const minLoadTimeout = 2 * time.Second

// Options configures a Watcher.
type Options struct {
	Every    time.Duration    // periodic full reload (default DefaultEvery)
	Defaults Settings         // YAML defaults of sipedge:settings (zero value: DefaultSettings)
	Now      func() time.Time // injected clock, default time.Now
}

// Watcher keeps the Snapshot of the contract current: it reloads at Start,
// every Every, at once on any message of the events channel (one
// subscription per process) and on Refresh. A failed reload keeps the last
// snapshot (fail-static). "conf-end <id>" messages are not reloads: they go
// to ConfEnds.
type Watcher struct {
	rdb  redis.UniversalClient
	k    keys.Keys
	opts Options
	log  zerolog.Logger
	m    *metrics

	snap     atomic.Pointer[Snapshot]
	kick     chan struct{} // reload requests, coalesced
	confEnds chan string
	defaults atomic.Pointer[Settings]

	lastErr atomic.Pointer[error] // last reload's Redis error, nil after a good one

	mu       sync.Mutex        // serialises reloads and guards the fields below
	redisErr string            // last logged Redis error text
	logged   map[string]string // "key/field" -> last logged bad value error
	notify   []chan struct{}
	onEnd    []func(id string)              // OnConfEnd
	onPlaced []func(id string, placed bool) // OnConfPlaced
	onMoved  []func(id string)              // OnConfMoved
	onSub    []func()                       // OnPlacementsSubscribed
}

// NewWatcher returns a Watcher and registers its metrics on reg (nil: kept
// but not exported).
func NewWatcher(rdb redis.UniversalClient, k keys.Keys, opts Options, log zerolog.Logger, reg prometheus.Registerer) (*Watcher, error) {
	if opts.Every <= 0 {
		opts.Every = DefaultEvery
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Defaults == (Settings{}) {
		opts.Defaults = DefaultSettings()
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	w := &Watcher{rdb: rdb, k: k, opts: opts, log: log, m: m, kick: make(chan struct{}, 1),
		confEnds: make(chan string, 256), logged: map[string]string{}}
	d := opts.Defaults
	w.defaults.Store(&d)
	w.snap.Store(Empty(d))
	return w, nil
}

// Snapshot returns the current snapshot without locking; never nil.
func (w *Watcher) Snapshot() *Snapshot { return w.snap.Load() }

// Err is the Redis error of the last reload, nil when it succeeded: the
// snapshot is then older than this reload (fail-static).
func (w *Watcher) Err() error {
	if e := w.lastErr.Load(); e != nil {
		return *e
	}
	return nil
}

// Notify returns a channel that receives (coalesced, never blocking the
// watcher) after every reload, good or failed. Call it before Run.
func (w *Watcher) Notify() <-chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	w.notify = append(w.notify, ch)
	w.mu.Unlock()
	return ch
}

// ConfEnds delivers the ids of "conf-end <id>" messages of the events
// channel. It has one reader (the media manager); when nobody reads, or it
// falls behind, ids are dropped (its periodic pass sees the end too).
func (w *Watcher) ConfEnds() <-chan string { return w.confEnds }

// OnConfEnd registers f to be called with the id of every "conf-end <id>"
// message, before it goes to ConfEnds; f must not block. Call it before Run.
func (w *Watcher) OnConfEnd(f func(id string)) {
	w.mu.Lock()
	w.onEnd = append(w.onEnd, f)
	w.mu.Unlock()
}

// OnConfPlaced registers f to be called for every message of the
// placements channel: a conference given a node (placed) or whose key was
// deleted (not placed), in the order they were published; f must not
// block. Call it before Run.
func (w *Watcher) OnConfPlaced(f func(id string, placed bool)) {
	w.mu.Lock()
	w.onPlaced = append(w.onPlaced, f)
	w.mu.Unlock()
}

// OnConfMoved registers f to be called for every conference moved off a
// failed node (keys.MovedMessage on the placements channel); f must not
// block. Call it before Run.
func (w *Watcher) OnConfMoved(f func(id string)) {
	w.mu.Lock()
	w.onMoved = append(w.onMoved, f)
	w.mu.Unlock()
}

// OnPlacementsSubscribed registers f to be called at every (re)subscription
// to the placements channel, before any message received on it: messages
// published while the subscription was down are lost, so what was built
// from them must be rebuilt. f must not block. Call it before Run.
func (w *Watcher) OnPlacementsSubscribed(f func()) {
	w.mu.Lock()
	w.onSub = append(w.onSub, f)
	w.mu.Unlock()
}

// SetDefaults replaces the YAML defaults of sipedge:settings while sipedge
// runs (SIGHUP) and reloads soon; values set in Redis still override them.
func (w *Watcher) SetDefaults(d Settings) {
	w.defaults.Store(&d)
	w.Refresh()
}

// Defaults are the YAML defaults in force.
func (w *Watcher) Defaults() Settings { return *w.defaults.Load() }

// Refresh asks Run for a reload soon, without waiting for it.
func (w *Watcher) Refresh() {
	select {
	case w.kick <- struct{}{}:
	default: // a reload is already pending; it will see this change too
	}
}

// Start does the first load synchronously, so an instance does not accept
// calls before it knows the contract. It fails when Redis does.
func (w *Watcher) Start(ctx context.Context) error { return w.Reload(ctx) }

// Run keeps the snapshot current until ctx is done. go-redis resubscribes
// by itself after a connection loss, and each (re)subscription
// confirmation triggers a reload too, covering events missed meanwhile.
// Redis errors never stop it.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { w.listen(ctx) })
	t := time.NewTicker(w.opts.Every)
	defer t.Stop()
	for {
		_ = w.Reload(ctx) // logged and counted inside
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-w.kick:
		}
	}
}

func (w *Watcher) listen(ctx context.Context) {
	w.mu.Lock()
	onEnd, onPlaced, onMoved, onSub := w.onEnd, w.onPlaced, w.onMoved, w.onSub
	w.mu.Unlock()
	placements := w.k.Placements()
	ps := w.rdb.Subscribe(ctx, w.k.Events(), placements) // one subscription, two channels
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			if sub, isSub := msg.(*redis.Subscription); isSub && sub.Channel == placements {
				if sub.Kind == "subscribe" {
					for _, f := range onSub {
						f()
					}
				}
				continue
			}
			if m, isMsg := msg.(*redis.Message); isMsg {
				if m.Channel == placements {
					if id, placed, ok := keys.ParsePlacement(m.Payload); ok {
						for _, f := range onPlaced {
							f(id, placed)
						}
					} else if id, ok := keys.ParseMoved(m.Payload); ok {
						for _, f := range onMoved {
							f(id)
						}
					}
					continue
				}
				if id, end := keys.ParseConfEnd(m.Payload); end {
					for _, f := range onEnd {
						f(id)
					}
					select {
					case w.confEnds <- id:
					default: // the media manager's periodic pass sees the end too
					}
					continue
				}
			}
			w.Refresh()
		}
	}
}

// Reload reads the contract once and publishes the new snapshot; on a
// Redis error the current one stays and the error is counted and logged
// once per change.
func (w *Watcher) Reload(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.notifyLocked()
	lctx, cancel := context.WithTimeout(ctx, max(minLoadTimeout, w.opts.Every))
	defer cancel()
	s, err := Load(lctx, w.rdb, w.k, w.Defaults(), w.snap.Load())
	if err != nil {
		if ctx.Err() != nil {
			return err // shutting down, not a Redis fault
		}
		w.lastErr.Store(&err)
		w.m.errors.Inc()
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
	s.ReadAt = w.opts.Now()
	w.logBadLocked(s.Bad)
	w.m.lastLoad.Set(float64(s.ReadAt.UnixMilli()) / 1e3)
	w.m.reloads.Inc()
	w.snap.Store(s)
	w.lastErr.Store(nil)
	return nil
}

func (w *Watcher) notifyLocked() {
	for _, ch := range w.notify {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// logBadLocked logs each bad value once per change of its error text, so
// a bad value left in Redis does not log twice a second on every instance.
func (w *Watcher) logBadLocked(bad []*FieldError) {
	seen := make(map[string]bool, len(bad))
	for _, fe := range bad {
		id := fe.Key + "/" + fe.Field
		seen[id] = true
		if w.logged[id] == fe.Reason {
			continue
		}
		w.logged[id] = fe.Reason
		w.m.badValues.Inc()
		w.log.Warn().Str("key", fe.Key).Str("field", fe.Field).Str("value", fe.Value).Str("error", fe.Reason).
			Msg("bad value in Redis ignored; last good value kept")
	}
	for id := range w.logged {
		if !seen[id] {
			delete(w.logged, id)
		}
	}
}
