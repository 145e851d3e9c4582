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
// at the next beat: most beats write only what changed, and a beat that
// finds this instance's share lost or rewound, or the set of live shares
// changed, rewrites everything at once (ledger_beat.go).

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
	Self     string        // this instance's name
	Interval time.Duration // beat period (the heartbeat)
	// FullEvery is how often a beat rewrites the whole share and every
	// conference held here even when nothing asks for it (default 10
	// Interval, at most placedKeep/2): what else would fix a derived
	// count edited by hand (ledger_beat.go).
	FullEvery        time.Duration
	LiveFor          time.Duration // a share not rewritten for this long no longer counts
	HeartbeatTimeout time.Duration // an instance hash older than this is not alive
	ConfTTL          time.Duration // expiry of a conference key (safety net)
	RedisTimeout     time.Duration // bound on one write
	ReconcileEvery   time.Duration // how often every conference key is checked (default 5 s)
	// Recent is how long a conference seen here is rewritten at every full
	// beat after its last change (default LiveFor + 2 Interval: long
	// enough for the share of an instance that died holding dialogs of it
	// to expire, and for the beat that sees it gone, a full one, to write
	// the sum without it). Every full beat carries every such conference,
	// so with a meeting id per call it grows with the call rate times
	// Recent. A conference key that no beat carries any more and that is
	// still wrong (restored from an old AOF) is the reconcile's to fix
	// (ReconcileEvery).
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
	deferred   map[string]bool           // confs in progress a window left for the beat (deferInProgress)
	lastRecon  time.Time
	okStreak   int       // beats in a row whose writes succeeded
	beat       beatState // ledger_beat.go

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
	if opts.FullEvery <= 0 {
		opts.FullEvery = 10 * opts.Interval
	}
	opts.FullEvery = min(opts.FullEvery, placedKeep/2) // the beats refresh every cached answer (sticky.go)
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
		deferred: map[string]bool{}, notes: map[string]map[string]int{}, beat: newBeatState()}
	m, err := newLedgerMetrics(reg, l.index.ready)
	if err != nil {
		return nil, err
	}
	l.m = m
	return l, nil
}

// Touch marks a conference and a node whose share changed here; the
// new values are written at once (coalesced), and again at every full beat. A
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

// Run writes changes Coalesce after the first of them and beats every
// Interval (ledger_beat.go) until ctx is done.
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
	if len(sh.confs) == 0 && len(nodes) == 0 {
		return
	}
	if _, err := l.write(ctx, sh, false); err != nil {
		l.mu.Lock()
		for c := range confs {
			l.dirtyConfs[c] = true
		}
		for n := range nodes {
			l.dirtyNodes[n] = true
		}
		l.mu.Unlock()
		l.beat.request(FullAfterFailure)
		l.fail(ctx, "flush", err)
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
