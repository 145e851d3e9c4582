package admission

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

// Counts in Redis (node_calls, instance_calls, the dialogs of every
// sipedge:conf:<id>) are derived, never incremented: each instance's own
// dialog set is the truth for the dialogs it set up. The Ledger writes this
// instance's share of them as absolute values into its contribution hash
// sipedge:calls:<instance> (fields n:<node>, c:<conf>, t = total, expiring
// after LiveFor), and rewrites each derived count as the sum of the shares
// of the live instances, inside one script. Writing an absolute value twice
// changes nothing, so a replayed BYE, a retry after a failed write, or a
// Redis restarted empty or from an old AOF all converge to the exact value
// at the next beat.

// ConfHolding is what one instance holds of one conference.
type ConfHolding struct {
	Dialogs int
	Node    string // a node those dialogs are on (the placement to record)
}

// Holdings is what one instance holds: its share of every count.
type Holdings struct {
	Confs map[string]ConfHolding
	Nodes map[string]int
	Total int
}

// Holder is the dialog set the counts are derived from (the proxy).
type Holder interface {
	// ConfHolding, NodeDialogs and ActiveDialogs count the dialogs held here.
	ConfHolding(conf string) ConfHolding
	NodeDialogs(node string) int
	ActiveDialogs() int
	Holdings() Holdings
	// EndNoted ends the dialogs named by keys (dialogs set up here whose
	// BYE passed another instance); unknown keys are ignored.
	EndNoted(keys []string) int
}

// LedgerOptions configures a Ledger.
type LedgerOptions struct {
	Self             string        // this instance's name
	Interval         time.Duration // full rewrite period (the heartbeat)
	LiveFor          time.Duration // a share not rewritten for this long no longer counts
	HeartbeatTimeout time.Duration // an instance hash older than this is not alive
	ConfTTL          time.Duration // expiry of a conference key (safety net)
	RedisTimeout     time.Duration // bound on one write
	ReconcileEvery   time.Duration // how often every conference key is checked (default 5 s)
	// Recent is how long a conference seen here is rewritten at every beat
	// after its last change (default LiveFor + 2 Interval: long enough for
	// the share of an instance that died holding dialogs of it to expire,
	// and for one more beat to write the sum without it). Every beat
	// carries every such conference, so with a meeting id per call the
	// beat grows with the call rate times Recent. A conference key that
	// no beat carries any more and that is still wrong (restored from an
	// old AOF) is the reconcile's to fix (ReconcileEvery).
	Recent time.Duration
	// Coalesce is how long a change waits for others before it is written
	// (default DefaultCoalesce; negative: at once). Every write is one
	// script run and two wake-ups of this process (its reply, and the
	// placements channel's notice), whose cost does not depend on how many
	// changes it carries: at 1000 calls/s writing each change alone cost a
	// fifth of the proxy's CPU, and at 250 calls/s a 10 ms window still
	// cost a tenth (BENCHMARKS.md "The ledger's window"). Counts are read
	// by drains, failover and the CLI, none of which notice 50 ms;
	// placement agreement between instances does not depend on it (the
	// ring answers the same node to both).
	Coalesce time.Duration
	Now      func() time.Time
}

// Ledger keeps this instance's share of the counts in Redis.
type Ledger struct {
	rdb  redis.UniversalClient
	k    keys.Keys
	opts LedgerOptions
	src  Holder
	log  zerolog.Logger
	m    *ledgerMetrics

	wake    chan struct{}
	rescan  chan struct{} // the placements channel was (re)subscribed: rebuild the index now
	pending atomic.Bool   // a wake is sent or a window is armed: further changes need no wake

	mu         sync.Mutex
	dirtyConfs map[string]bool
	dirtyNodes map[string]bool
	recent     map[string]time.Time      // conf -> when it was last seen with dialogs here or touched
	notes      map[string]map[string]int // owner -> dialog key -> successful writes still due
	lastRecon  time.Time
	okStreak   int // full writes in a row that succeeded

	placed placedCache    // the node each write returned (sticky.go)
	index  placementIndex // the conferences that have a placement (unplaced.go)
}

// NewLedger returns a Ledger for src; Run drives it.
func NewLedger(rdb redis.UniversalClient, k keys.Keys, opts LedgerOptions, src Holder, log zerolog.Logger, reg prometheus.Registerer) (*Ledger, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.LiveFor <= 0 {
		opts.LiveFor = 5 * opts.Interval
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = opts.LiveFor
	}
	if opts.RedisTimeout <= 0 {
		opts.RedisTimeout = time.Second
	}
	if opts.ReconcileEvery <= 0 {
		opts.ReconcileEvery = 5 * time.Second
	}
	if opts.Recent <= 0 {
		opts.Recent = opts.LiveFor + 2*opts.Interval
	}
	if opts.ConfTTL <= 0 {
		opts.ConfTTL = 24 * time.Hour
	}
	if opts.Coalesce == 0 {
		opts.Coalesce = DefaultCoalesce
	}
	l := &Ledger{rdb: rdb, k: k, opts: opts, src: src, log: log, wake: make(chan struct{}, 1), rescan: make(chan struct{}, 1),
		dirtyConfs: map[string]bool{}, dirtyNodes: map[string]bool{}, recent: map[string]time.Time{},
		notes: map[string]map[string]int{}}
	m, err := newLedgerMetrics(reg, l.index.ready)
	if err != nil {
		return nil, err
	}
	l.m = m
	return l, nil
}

// Touch marks a conference and a node whose share changed here; the
// new values are written at once (coalesced), and again at every beat. A
// conference whose share stays positive waits for the beat (flush).
func (l *Ledger) Touch(conf, node string) {
	l.mu.Lock()
	if conf != "" {
		l.dirtyConfs[conf] = true
		l.recent[conf] = l.opts.Now()
	}
	if node != "" {
		l.dirtyNodes[node] = true
	}
	l.mu.Unlock()
	l.kick()
}

// NoteEnded tells owner that its dialog key ended through this instance.
// A note that cannot be written is kept and retried at every beat.
func (l *Ledger) NoteEnded(owner, key string) {
	if owner == "" || key == "" {
		return
	}
	l.mu.Lock()
	if l.notes[owner] == nil {
		l.notes[owner] = map[string]int{}
	}
	if _, dup := l.notes[owner][key]; !dup {
		l.notes[owner][key] = noteWrites
	}
	l.mu.Unlock()
	l.kick()
}

// kick wakes Run for the first change of a window only: at 3000 calls/s
// every call set-up and end touches the ledger, and waking Run for each
// (to find its window already armed) was a goroutine switch each time.
func (l *Ledger) kick() {
	if l.pending.Swap(true) {
		return // Run has a wake queued or a window armed; it will see this change
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// DefaultCoalesce is the default LedgerOptions.Coalesce (and of the
// counts_window setting).
const DefaultCoalesce = 50 * time.Millisecond

// Run writes changes Coalesce after the first of them and rewrites
// everything every Interval until ctx is done.
func (l *Ledger) Run(ctx context.Context) {
	t := time.NewTicker(l.opts.Interval)
	defer t.Stop()
	l.Beat(ctx)
	window := time.NewTimer(time.Hour)
	window.Stop()
	defer window.Stop()
	armed := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
			if l.opts.Coalesce < 0 {
				l.pending.Store(false) // before the flush reads: a change from now on wakes again
				l.flush(ctx)
			} else if !armed {
				window.Reset(l.opts.Coalesce)
				armed = true
			}
		case <-window.C:
			armed = false
			l.pending.Store(false)
			l.flush(ctx)
		case <-t.C:
			l.Beat(ctx)
		case <-l.rescan:
			l.scanIndex(ctx)
		}
	}
}

// flush writes the notes and the touched counts.
func (l *Ledger) flush(ctx context.Context) {
	l.writeNotes(ctx, false)
	l.mu.Lock()
	confs, nodes := l.dirtyConfs, l.dirtyNodes
	l.dirtyConfs, l.dirtyNodes = map[string]bool{}, map[string]bool{}
	l.mu.Unlock()
	if len(confs) == 0 && len(nodes) == 0 {
		return
	}
	sh := share{at: l.opts.Now(), total: l.src.ActiveDialogs(), nodes: map[string]int{}, confs: map[string]ConfHolding{}}
	for n := range nodes {
		sh.nodes[n] = l.src.NodeDialogs(n)
	}
	for c := range confs {
		sh.confs[c] = l.src.ConfHolding(c)
	}
	l.deferInProgress(sh.confs)
	if err := l.write(ctx, sh, false); err != nil {
		l.mu.Lock()
		for c := range confs {
			l.dirtyConfs[c] = true
		}
		for n := range nodes {
			l.dirtyNodes[n] = true
		}
		l.mu.Unlock()
		l.fail(ctx, "flush", err)
	}
}

// Beat consumes the end notes for this instance, then rewrites its whole
// share and every node and instance count.
func (l *Ledger) Beat(ctx context.Context) {
	l.writeNotes(ctx, true)
	l.consumeNotes(ctx)
	at := l.opts.Now()
	h := l.src.Holdings()
	now := l.opts.Now()
	l.placed.prune(now, placedKeep)
	sh := share{at: at, total: h.Total, nodes: h.Nodes, confs: map[string]ConfHolding{}}
	l.mu.Lock()
	for c, ch := range h.Confs {
		sh.confs[c] = ch
		l.recent[c] = now
	}
	for c, at := range l.recent {
		if now.Sub(at) > l.opts.Recent && !l.dirtyConfs[c] {
			delete(l.recent, c)
			continue
		}
		if _, ok := sh.confs[c]; !ok {
			sh.confs[c] = ConfHolding{}
		}
	}
	for c := range l.dirtyConfs {
		if _, ok := sh.confs[c]; !ok {
			sh.confs[c] = ConfHolding{}
		}
	}
	l.dirtyConfs, l.dirtyNodes = map[string]bool{}, map[string]bool{}
	// Reconcile only once Redis has answered for a few beats: after an
	// outage every live instance must have rewritten its share first.
	recon := now.Sub(l.lastRecon) >= l.opts.ReconcileEvery && l.okStreak >= reconcileAfter
	l.mu.Unlock()
	if err := l.write(ctx, sh, true); err != nil {
		l.mu.Lock()
		for c := range sh.confs {
			l.dirtyConfs[c] = true
		}
		l.okStreak = 0
		l.mu.Unlock()
		l.fail(ctx, "beat", err)
		return
	}
	l.mu.Lock()
	l.okStreak++
	l.mu.Unlock()
	if !recon && l.index.stale() {
		l.scanIndex(ctx) // the reconcile scans too
	}
	if recon {
		if err := l.reconcile(ctx); err != nil {
			l.fail(ctx, "reconcile", err)
			return
		}
		l.mu.Lock()
		l.lastRecon = now
		l.mu.Unlock()
	}
}

func (l *Ledger) fail(ctx context.Context, op string, err error) {
	if ctx.Err() != nil {
		return // shutting down, not a Redis fault
	}
	l.index.lost()
	l.m.errors.WithLabelValues(op).Inc()
	l.log.Warn().Err(err).Str("op", op).Msg("dialog counts not written to Redis; rewritten at the next beat")
}
