package admission

// The ledger's writes: this instance's share and the derived counts in one
// script run (the reconcile is in ledger_reconcile.go).

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

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
// prefix, gen, epoch, nodes count N, then N pairs (node, n), then triples
// (conf, n, node).
// Returns the share's write generation before this run ("" if it had
// none), the live shares of the other instances ("name=epoch" sorted, space
// separated; ledger_beat.go), then, for each conf, its derived dialog
// count and placed node.
var writeScript = redis.NewScript(`
local share, nodeCalls, instCalls, instances = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local self, live, now, confTTL, total, full, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
local gen, epoch = ARGV[8], ARGV[9]
local nn = tonumber(ARGV[10])
redis.call('SADD', instances, self)
local prevGen = redis.call('HGET', share, 'w') or ''
if full == '1' then redis.call('DEL', share) end
-- mine is what this run wrote of this instance's share: after a full write
-- (DEL first), every field of it; otherwise every field summed below.
local mine = {}
local function put(f, v)
  mine[f] = v
  if v > 0 then redis.call('HSET', share, f, v) else redis.call('HDEL', share, f) end
end
local i = 11
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
redis.call('HSET', share, 't', total, 'w', gen, 'e', epoch)
redis.call('PEXPIRE', share, live)

local members = redis.call('SMEMBERS', instances)
-- The other instances whose share counts now, each with the epoch of the
-- process that writes it: a share that expired or was rewritten by a
-- restarted instance changes this, and the beat rewrites everything.
local lives = {}
for _, m in ipairs(members) do
  if m ~= self then
    local e = redis.call('HGET', prefix .. 'calls:' .. m, 'e')
    if not e and redis.call('EXISTS', prefix .. 'calls:' .. m) == 1 then e = '?' end -- written by an older sipedge
    if e then lives[#lives + 1] = m .. '=' .. e end
  end
end
table.sort(lives)
-- sum is this instance's value (mine) plus the other live shares': each
-- redis.call costs about 2 µs (BENCHMARKS.md "redis-server's CPU at low
-- rates").
local function sum(f)
  local s = mine[f] or 0
  for _, m in ipairs(members) do
    if m ~= self then
      local v = redis.call('HGET', prefix .. 'calls:' .. m, f)
      if v then s = s + tonumber(v) end
    end
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
  setCount(instCalls, self, total)
end
for n in pairs(nodes) do setCount(nodeCalls, n, sum('n:' .. n)) end

local out = {prevGen, table.concat(lives, ' ')}
for _, c in ipairs(confs) do
  local key = prefix .. 'conf:' .. c[1]
  local n = sum('c:' .. c[1])
  local placed = ''
  if n <= 0 then
    if redis.call('DEL', key) == 1 then
      redis.call('PUBLISH', prefix .. 'placements', '-' .. c[1]) -- keys.GoneMessage
    end
  else
    -- The placement fields are set only where missing, in the one HSET
    -- of the count: 2 commands where three HSETNX, the HSET and an HGET
    -- were 5.
    local cur = redis.call('HMGET', key, 'node', 'started', 'instance')
    local set = {'dialogs', n}
    placed = cur[1] or ''
    if c[2] ~= '' then
      if not cur[1] then set[#set + 1] = 'node'; set[#set + 1] = c[2]; placed = c[2] end
      if not cur[2] then set[#set + 1] = 'started'; set[#set + 1] = now end
      if not cur[3] then set[#set + 1] = 'instance'; set[#set + 1] = self end
    end
    redis.call('HSET', key, unpack(set))
    if not cur[1] and placed ~= '' then
      redis.call('PUBLISH', prefix .. 'placements', '+' .. c[1]) -- keys.PlacedMessage (unplaced.go)
    end
    redis.call('PEXPIRE', key, confTTL)
  end
  out[#out + 1] = c[1]
  out[#out + 1] = n
  out[#out + 1] = placed
end
return out
`)

// written is what a write found of the share before it, and of the others.
type written struct {
	prevGen string // the share's generation before the write ("" if none)
	lives   string // the other live shares (writeScript)
	lost    bool   // the share was not the one the last successful write left
}

func (l *Ledger) write(ctx context.Context, sh share, full bool) (written, error) {
	ctx, cancel := context.WithTimeout(ctx, max(l.opts.RedisTimeout, time.Second))
	defer cancel()
	now := l.opts.Now()
	gen := l.beat.nextGen()
	args := []any{l.opts.Self, l.opts.LiveFor.Milliseconds(), now.UnixMilli(), l.opts.ConfTTL.Milliseconds(),
		sh.total, flag(full), l.k.Prefix, gen, l.beat.epoch, len(sh.nodes)}
	for _, n := range sortedKeys(sh.nodes) {
		args = append(args, n, sh.nodes[n])
	}
	for _, c := range sortedKeys(sh.confs) {
		args = append(args, c, sh.confs[c].Dialogs, sh.confs[c].Node)
	}
	res, err := writeScript.Run(ctx, l.rdb, []string{l.k.Calls(l.opts.Self), l.k.NodeCalls(), l.k.InstanceCalls(), l.k.Instances()},
		args...).Slice()
	if err != nil {
		return written{}, fmt.Errorf("write dialog counts of instance %q: %w", l.opts.Self, err)
	}
	l.m.writes.Inc()
	var w written
	if len(res) >= 2 {
		w.prevGen, _ = res[0].(string)
		w.lives, _ = res[1].(string)
		res = res[2:]
	}
	if w.lost = l.beat.written(gen, w, sh.at, full); w.lost {
		l.placed.distrust(sh.at) // the answers before this write came from a share Redis lost
	}
	var settled []string
	for i := 0; i+2 < len(res); i += 3 {
		conf, _ := res[i].(string)
		n, _ := res[i+1].(int64)
		placed, _ := res[i+2].(string)
		mine := sh.confs[conf]
		l.placed.notePlaced(conf, mine, placed, sh.at)
		if n == 0 && mine.Dialogs == 0 {
			settled = append(settled, conf)
		}
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
	l.settle(settled, sh.at)
	return w, nil
}

// deferInProgress drops from confs (a window's changes) each conference
// that is in progress here: it still has dialogs, and the placement cache
// holds the node a write that carried dialogs of it returned (sticky.go),
// so this instance's share of it in Redis is positive.
//
// A conference's count matters between beats only where it crosses zero:
// from none to some here (the key and its placement are made, and no
// other instance's write may find the sum at 0 and delete the key while
// this one holds dialogs of it), and from some to none (the key goes when
// the sum reaches 0). A count that stays positive (3 dialogs here, then 2)
// is only what sipedgectl shows; it waits for the beat, at most Interval
// later, like the dialog module's periodic database update in Kamailio.
// A conference without a local answer (its first write, a failover's
// ForgetPlaced, a conf-end) is written in the window, so the answer comes
// back from that write. At 3000 calls/s over 500 conferences nearly every
// conference changed in every window, and the window's script rewrote
// them all, 20 times a second, on a single-threaded Redis that the
// proxy's core shares (BENCHMARKS.md "Counts of conferences in progress
// at the beat").
//
// The next beat writes the conferences left here (l.deferred), light or
// full (ledger_beat.go).
func (l *Ledger) deferInProgress(confs map[string]ConfHolding) {
	var left []string
	for c, h := range confs {
		if _, placed := l.placed.get(c); h.Dialogs > 0 && placed {
			delete(confs, c)
			left = append(left, c)
		}
	}
	if len(left) == 0 {
		return
	}
	l.mu.Lock()
	for _, c := range left {
		l.deferred[c] = true
	}
	l.mu.Unlock()
}

// settle stops rewriting, at the beats, the conferences a write found
// with no dialog at any live instance (their key is deleted): nothing is
// left to converge, unless they changed since the write's holdings were
// read (at). A key an old AOF brings back is the reconcile's.
func (l *Ledger) settle(confs []string, at time.Time) {
	if len(confs) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range confs {
		if seen, ok := l.recent[c]; ok && !seen.After(at) && !l.dirtyConfs[c] {
			delete(l.recent, c)
		}
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
