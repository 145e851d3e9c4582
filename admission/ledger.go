package admission

import (
	"context"
	"fmt"
	"sort"
	"sync"
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
	Recent           time.Duration // a conference seen ending is rewritten this long (default 30 s)
	// Coalesce is how long a change waits for others before it is written
	// (default 10 ms; negative: at once). Every write is one script run
	// whose cost in this process does not depend on how many changes it
	// carries, so at 1000 calls/s writing each change alone cost a fifth
	// of the proxy's CPU. Counts are read by drains, failover and the CLI,
	// none of which notice 10 ms; placement agreement between instances
	// does not depend on it (the ring answers the same node to both).
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

	wake chan struct{}

	mu         sync.Mutex
	dirtyConfs map[string]bool
	dirtyNodes map[string]bool
	recent     map[string]time.Time      // conf -> when it was last seen with dialogs here or touched
	notes      map[string]map[string]int // owner -> dialog key -> successful writes still due
	lastRecon  time.Time
	okStreak   int // full writes in a row that succeeded

	placed placedCache // the node each write returned (sticky.go)
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
		opts.Recent = 30 * time.Second
	}
	if opts.ConfTTL <= 0 {
		opts.ConfTTL = 24 * time.Hour
	}
	if opts.Coalesce == 0 {
		opts.Coalesce = DefaultCoalesce
	}
	m, err := newLedgerMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Ledger{rdb: rdb, k: k, opts: opts, src: src, log: log, m: m, wake: make(chan struct{}, 1),
		dirtyConfs: map[string]bool{}, dirtyNodes: map[string]bool{}, recent: map[string]time.Time{},
		notes: map[string]map[string]int{}}, nil
}

// Touch marks a conference and a node whose share changed here; the
// new values are written at once (coalesced), and again at every beat.
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

func (l *Ledger) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// DefaultCoalesce is the default LedgerOptions.Coalesce.
const DefaultCoalesce = 10 * time.Millisecond

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
				l.flush(ctx)
			} else if !armed {
				window.Reset(l.opts.Coalesce)
				armed = true
			}
		case <-window.C:
			armed = false
			l.flush(ctx)
		case <-t.C:
			l.Beat(ctx)
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
	l.placed.prune(now, l.opts.Recent)
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
	l.m.errors.WithLabelValues(op).Inc()
	l.log.Warn().Err(err).Str("op", op).Msg("dialog counts not written to Redis; rewritten at the next beat")
}

// share is a set of absolute values of this instance's share.
type share struct {
	at    time.Time // when the holdings were read
	total int
	nodes map[string]int
	confs map[string]ConfHolding
}

// writeScript writes this instance's share (KEYS[1]) and rewrites the
// derived counts from the shares of every instance in KEYS[4] whose share
// has not expired. It is the one writer of this instance's membership of
// KEYS[4] (instance.Publisher writes only the instance hash), so the
// share it writes is always summed.
//
// KEYS: share, node_calls, instance_calls, instances.
// ARGV: self, live_ms, now_ms, conf_ttl_ms, total, full (1/0),
// prefix, nodes count N, then N pairs (node, n), then triples (conf, n, node).
// Returns, for each conf, its derived dialog count and placed node.
var writeScript = redis.NewScript(`
local share, nodeCalls, instCalls, instances = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local self, live, now, confTTL, total, full, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
local nn = tonumber(ARGV[8])
redis.call('SADD', instances, self)
if full == '1' then redis.call('DEL', share) end
local function put(f, v)
  if v > 0 then redis.call('HSET', share, f, v) else redis.call('HDEL', share, f) end
end
local i = 9
local nodes = {}
for _ = 1, nn do
  put('n:' .. ARGV[i], tonumber(ARGV[i + 1]))
  nodes[ARGV[i]] = true
  i = i + 2
end
local confs = {}
while i <= #ARGV do
  put('c:' .. ARGV[i], tonumber(ARGV[i + 1]))
  confs[#confs + 1] = {ARGV[i], ARGV[i + 2]}
  i = i + 3
end
redis.call('HSET', share, 't', total)
redis.call('PEXPIRE', share, live)

local members = redis.call('SMEMBERS', instances)
local function sum(f)
  local s = 0
  for _, m in ipairs(members) do
    local v = redis.call('HGET', prefix .. 'calls:' .. m, f)
    if v then s = s + tonumber(v) end
  end
  return s
end
local function setCount(key, field, n)
  if n > 0 then redis.call('HSET', key, field, n) else redis.call('HDEL', key, field) end
end

if full == '1' then
  for _, f in ipairs(redis.call('HKEYS', nodeCalls)) do nodes[f] = true end
  for _, m in ipairs(members) do
    for _, f in ipairs(redis.call('HKEYS', prefix .. 'calls:' .. m)) do
      if string.sub(f, 1, 2) == 'n:' then nodes[string.sub(f, 3)] = true end
    end
  end
  local insts = {}
  for _, f in ipairs(redis.call('HKEYS', instCalls)) do insts[f] = true end
  for _, m in ipairs(members) do insts[m] = true end
  for m in pairs(insts) do
    setCount(instCalls, m, tonumber(redis.call('HGET', prefix .. 'calls:' .. m, 't') or '0'))
  end
else
  setCount(instCalls, self, tonumber(redis.call('HGET', share, 't')))
end
for n in pairs(nodes) do setCount(nodeCalls, n, sum('n:' .. n)) end

local out = {}
for _, c in ipairs(confs) do
  local key = prefix .. 'conf:' .. c[1]
  local n = sum('c:' .. c[1])
  local placed = ''
  if n <= 0 then
    redis.call('DEL', key)
  else
    if c[2] ~= '' then
      redis.call('HSETNX', key, 'node', c[2])
      redis.call('HSETNX', key, 'started', now)
      redis.call('HSETNX', key, 'instance', self)
    end
    redis.call('HSET', key, 'dialogs', n)
    redis.call('PEXPIRE', key, confTTL)
    placed = redis.call('HGET', key, 'node') or ''
  end
  out[#out + 1] = c[1]
  out[#out + 1] = n
  out[#out + 1] = placed
end
return out
`)

func (l *Ledger) write(ctx context.Context, sh share, full bool) error {
	ctx, cancel := context.WithTimeout(ctx, max(l.opts.RedisTimeout, time.Second))
	defer cancel()
	now := l.opts.Now()
	args := []any{l.opts.Self, l.opts.LiveFor.Milliseconds(), now.UnixMilli(), l.opts.ConfTTL.Milliseconds(),
		sh.total, flag(full), l.k.Prefix, len(sh.nodes)}
	for _, n := range sortedKeys(sh.nodes) {
		args = append(args, n, sh.nodes[n])
	}
	for _, c := range sortedKeys(sh.confs) {
		args = append(args, c, sh.confs[c].Dialogs, sh.confs[c].Node)
	}
	res, err := writeScript.Run(ctx, l.rdb, []string{l.k.Calls(l.opts.Self), l.k.NodeCalls(), l.k.InstanceCalls(), l.k.Instances()},
		args...).Slice()
	if err != nil {
		return fmt.Errorf("write dialog counts of instance %q: %w", l.opts.Self, err)
	}
	l.m.writes.Inc()
	for i := 0; i+2 < len(res); i += 3 {
		conf, _ := res[i].(string)
		n, _ := res[i+1].(int64)
		placed, _ := res[i+2].(string)
		mine := sh.confs[conf]
		l.placed.notePlaced(conf, mine, placed, sh.at)
		switch {
		case n == 0 && !full:
			l.log.Info().Str("conf_id", conf).Msg("conference ended: last dialog gone")
		case mine.Dialogs > 0 && mine.Node != "" && placed != "" && placed != mine.Node && !full:
			// Another instance placed the conference first (a race on the very
			// first answer, or a ring change in between): report the split.
			l.log.Warn().Str("conf_id", conf).Str("node", mine.Node).Str("placed_on", placed).
				Msg("conference dialog landed off its placed node")
		}
	}
	return nil
}

// reconcileScript checks every conference key named in ARGV against the
// shares of the live instances: one no live instance holds is deleted, the
// others get their exact count. It does nothing while an instance with a
// fresh heartbeat has no share yet (it is rewriting it after a restart).
// KEYS: instances. ARGV: prefix, now_ms, heartbeat_timeout_ms, conf ids...
var reconcileScript = redis.NewScript(`
local prefix, now, hb = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local members = redis.call('SMEMBERS', KEYS[1])
for _, m in ipairs(members) do
  local beat = tonumber(redis.call('HGET', prefix .. 'instance:' .. m, 'heartbeat') or '0')
  if now - beat < hb and redis.call('EXISTS', prefix .. 'calls:' .. m) == 0 then return -1 end
end
local fixed = 0
for i = 4, #ARGV do
  local key = prefix .. 'conf:' .. ARGV[i]
  local s = 0
  for _, m in ipairs(members) do
    local v = redis.call('HGET', prefix .. 'calls:' .. m, 'c:' .. ARGV[i])
    if v then s = s + tonumber(v) end
  end
  local cur = redis.call('HGET', key, 'dialogs')
  if s <= 0 then
    if redis.call('EXISTS', key) == 1 then redis.call('DEL', key); fixed = fixed + 1 end
  elseif tonumber(cur or '0') ~= s then
    redis.call('HSET', key, 'dialogs', s)
    fixed = fixed + 1
  end
end
return fixed
`)

// reconcile fixes conference keys no live instance rewrites (restored from
// an old AOF, or left by an instance that died).
func (l *Ledger) reconcile(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*max(l.opts.RedisTimeout, time.Second))
	defer cancel()
	var ids []string
	prefix := l.k.Conf("")
	iter := l.rdb.Scan(ctx, 0, l.k.ConfPattern(), 1000).Iterator()
	for iter.Next(ctx) {
		ids = append(ids, iter.Val()[len(prefix):])
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("scan conference keys: %w", err)
	}
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 500)]
		ids = ids[len(batch):]
		args := []any{l.k.Prefix, l.opts.Now().UnixMilli(), l.opts.HeartbeatTimeout.Milliseconds()}
		for _, id := range batch {
			args = append(args, id)
		}
		n, err := reconcileScript.Run(ctx, l.rdb, []string{l.k.Instances()}, args...).Int()
		if err != nil {
			return fmt.Errorf("reconcile conference keys: %w", err)
		}
		if n < 0 {
			return nil // an instance is rewriting its share: next time
		}
		if n > 0 {
			l.m.reconciled.Add(float64(n))
			l.log.Info().Int("fixed", n).Msg("conference keys reconciled with the dialogs instances hold")
		}
	}
	return nil
}

// noteWrites is how many beats in a row a note is written again after it
// was first written: a Redis that loses its data (restarted empty) before
// the owner read the note gets it again. The owner ignores what it no
// longer holds, so a note read twice ends nothing twice.
const noteWrites = 5

// writeNotes writes the end notes to their owners: new ones only (all is
// false, on every change) or every note still due (at each beat).
func (l *Ledger) writeNotes(ctx context.Context, all bool) {
	l.mu.Lock()
	batch := map[string][]string{}
	for owner, ks := range l.notes {
		for k, due := range ks {
			if all || due == noteWrites {
				batch[owner] = append(batch[owner], k)
			}
		}
	}
	l.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, max(l.opts.RedisTimeout, time.Second))
	defer cancel()
	pipe := l.rdb.Pipeline()
	for owner, ks := range batch {
		members := make([]any, len(ks))
		for i, k := range ks {
			members[i] = k
		}
		pipe.SAdd(ctx, l.k.Ended(owner), members...)
		pipe.PExpire(ctx, l.k.Ended(owner), notesTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		l.fail(ctx, "note", err) // all kept, due as before
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for owner, ks := range batch {
		for _, k := range ks {
			due, ok := l.notes[owner][k]
			if !ok {
				continue
			}
			if due == noteWrites {
				l.m.notes.WithLabelValues("sent").Inc()
			}
			if due <= 1 {
				delete(l.notes[owner], k)
			} else {
				l.notes[owner][k] = due - 1
			}
		}
		if len(l.notes[owner]) == 0 {
			delete(l.notes, owner)
		}
	}
}

// reconcileAfter is how many successful beats in a row come before a
// reconcile: every live instance beats at the same interval.
const reconcileAfter = 3

// notesTTL bounds how long an end note waits for its owner.
const notesTTL = 10 * time.Minute

// consumeNotes ends the dialogs other instances saw end, then removes the
// notes it read (a note read twice is ignored the second time).
func (l *Ledger) consumeNotes(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(l.opts.RedisTimeout, time.Second))
	defer cancel()
	key := l.k.Ended(l.opts.Self)
	ks, err := l.rdb.SMembers(ctx, key).Result()
	if err != nil {
		l.fail(ctx, "notes", err)
		return
	}
	if len(ks) == 0 {
		return
	}
	n := l.src.EndNoted(ks)
	l.m.notes.WithLabelValues("received").Add(float64(len(ks)))
	l.log.Debug().Int("notes", len(ks)).Int("ended", n).Msg("dialog ends noted by other instances")
	members := make([]any, len(ks))
	for i, k := range ks {
		members[i] = k
	}
	if err := l.rdb.SRem(ctx, key, members...).Err(); err != nil {
		l.fail(ctx, "notes", err)
	}
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
