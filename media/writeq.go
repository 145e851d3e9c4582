package media

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/media/policy"
)

// Participant records are written behind: Joined, a presence change and
// Ended only queue a change; the Run loop sends every pending change in
// one pipeline per tick (sooner when flushAt are pending). A call has at
// most one pending change and a removal replaces a pending write, so a
// write never lands after its call's removal.

// flushAt is the number of pending changes that flushes before the tick.
const flushAt = 512

// statsTTL bounds how long an instance's media_stats hash outlives it.
const statsTTL = 10 * time.Second

// fieldMediaBoot is the field of sipedge:instance:<name> naming the run
// whose participant records count (a restarted instance's old records do not).
const fieldMediaBoot = "media_boot"

// shareLua adds a share ("<owner>|n,m,hy,ho,hm") to the counters (KEYS[3])
// times sign; a counter back at zero is deleted.
const shareLua = `
local names = {'n', 'm', 'hy', 'ho', 'hm'}
local function apply(share, sign)
  local owner, vec = string.match(share, '^(.*)|([^|]*)$')
  if not owner then return end
  local i = 1
  for v in string.gmatch(vec, '[^,]+') do
    local n = tonumber(v)
    if n and n ~= 0 and names[i] then
      local f = owner .. ':' .. names[i]
      if redis.call('HINCRBY', KEYS[3], f, sign * n) == 0 then
        redis.call('HDEL', KEYS[3], f)
      end
    end
    i = i + 1
  end
end
`

// putParticipant writes a record and moves the counters from the share the
// call had to its new one: the same call twice changes nothing (a retry is
// safe). KEYS: participants, shares, counts. ARGV: Call-ID, record, share, ttl ms.
var putParticipant = redis.NewScript(shareLua + `
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old ~= ARGV[3] then
  if old then apply(old, -1) end
  apply(ARGV[3], 1)
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return 1`)

// removeParticipant deletes a record and takes its share back; it returns
// {deleted, participants left, the conference's ended field}.
// KEYS: participants, shares, counts, conf. ARGV: Call-ID.
var removeParticipant = redis.NewScript(shareLua + `
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  apply(old, -1)
  redis.call('HDEL', KEYS[2], ARGV[1])
end
local del = redis.call('HDEL', KEYS[1], ARGV[1])
local left = redis.call('HLEN', KEYS[1])
local ended = redis.call('HGET', KEYS[4], 'ended')
if not ended then ended = '' end
return {del, left, ended}`)

type opKind uint8

const (
	opWrite opKind = iota + 1
	opRemove
)

// writeOp is the pending change of one call.
type writeOp struct {
	kind   opKind
	callID string
	conf   string
	s      *session // opWrite: the record is built from it when sent
}

// writeQueue holds the pending changes, in the order calls first changed.
type writeQueue struct {
	mu    sync.Mutex
	order []string
	ops   map[string]writeOp
}

// put queues op and returns how many changes are pending. A removal
// replaces a pending write; a write never replaces a pending removal.
func (q *writeQueue) put(op writeOp) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ops == nil {
		q.ops = map[string]writeOp{}
	}
	old, ok := q.ops[op.callID]
	switch {
	case !ok:
		q.order = append(q.order, op.callID)
		q.ops[op.callID] = op
	case old.kind == opRemove:
	default:
		q.ops[op.callID] = op
	}
	return len(q.order)
}

// take returns the pending changes and empties the queue.
func (q *writeQueue) take() []writeOp {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]writeOp, 0, len(q.order))
	for _, id := range q.order {
		out = append(out, q.ops[id])
	}
	q.order = q.order[:0]
	clear(q.ops)
	return out
}

// requeue puts back changes a failed flush did not send, unless a newer
// change of the same call is pending.
func (q *writeQueue) requeue(ops []writeOp) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ops == nil {
		q.ops = map[string]writeOp{}
	}
	for _, op := range ops {
		if _, ok := q.ops[op.callID]; ok {
			continue
		}
		q.order = append(q.order, op.callID)
		q.ops[op.callID] = op
	}
}

func (q *writeQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}

// enqueue queues a change; at flushAt pending it asks the loop to flush.
func (mg *Manager) enqueue(op writeOp) {
	if mg.writes.put(op) >= flushAt {
		select {
		case mg.flushNow <- struct{}{}:
		default:
		}
	}
}

// enqueueWrite queues a rewrite of s's record.
func (mg *Manager) enqueueWrite(s *session) {
	s.mu.Lock()
	conf, closed, joined := s.confID, s.closed, s.joined
	s.mu.Unlock()
	if closed || !joined {
		return
	}
	mg.enqueue(writeOp{kind: opWrite, callID: s.callID, conf: conf, s: s})
}

// owner names this run in the counters: <instance>/<boot>.
func (mg *Manager) owner() string { return mg.opts.Instance + "/" + mg.boot }

// statEntry is one participant's counters for the media_stats hash.
type statEntry struct {
	callID string
	c      contract.MediaCounters
}

// flush sends every pending change, and the per-second counters when
// stats is true, in one pipeline. It returns the conferences the changes
// touched (to evaluate), without those a removal found empty.
func (mg *Manager) flush(ctx context.Context, now time.Time, stats bool, entries []statEntry) []string {
	ops := mg.writes.take()
	if len(ops) == 0 && !stats {
		return nil
	}
	mg.resolveRoles(ctx, ops)
	k := mg.opts.Keys
	type sent struct {
		op   writeOp
		args []any
		keys []string
		cmd  *redis.Cmd
	}
	batch := make([]sent, 0, len(ops))
	for i, op := range ops {
		mg.pollRelay(i)
		switch op.kind {
		case opWrite:
			s := op.s
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				continue // left: its removal is queued or sent
			}
			r := s.record(mg.opts.Instance, now)
			r.Boot = mg.boot
			b, err := json.Marshal(r)
			if err != nil {
				mg.redisError("encode participant", err)
				continue
			}
			share := encodeShare(mg.owner(), shareOf(policy.Participant{Role: policy.Role(r.Role),
				Kind: policy.Kind(r.Kind), KeepAlive: policy.KeepAlive(r.KeepAlive), Present: r.Present}))
			batch = append(batch, sent{op: op,
				keys: []string{k.Participants(op.conf), k.ParticipantShares(op.conf), k.ParticipantCounts(op.conf)},
				args: []any{op.callID, b, share, recordTTL.Milliseconds()}})
		case opRemove:
			batch = append(batch, sent{op: op,
				keys: []string{k.Participants(op.conf), k.ParticipantShares(op.conf), k.ParticipantCounts(op.conf), k.Conf(op.conf)},
				args: []any{op.callID}})
		}
	}
	script := func(op writeOp) *redis.Script {
		if op.kind == opRemove {
			return removeParticipant
		}
		return putParticipant
	}
	p := mg.opts.Redis.Pipeline()
	for i := range batch {
		batch[i].cmd = script(batch[i].op).EvalSha(ctx, p, batch[i].keys, batch[i].args...)
	}
	if len(batch) > 0 || stats {
		p.HSet(ctx, k.Instance(mg.opts.Instance), fieldMediaBoot, mg.boot)
	}
	if stats {
		mg.statsCmds(ctx, p, now, entries)
	}
	mg.opts.Pool.Poll()
	_, err := p.Exec(ctx)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis lost its script cache (restart, SCRIPT FLUSH): send the
		// scripts themselves for the changes that did not run.
		p = mg.opts.Redis.Pipeline()
		for i := range batch {
			if redis.HasErrorPrefix(batch[i].cmd.Err(), "NOSCRIPT") {
				batch[i].cmd = script(batch[i].op).Eval(ctx, p, batch[i].keys, batch[i].args...)
			}
		}
		_, err = p.Exec(ctx)
	}
	if err != nil && err != redis.Nil {
		mg.redisError("write participants", err)
	}
	var touched []string
	var failed []writeOp
	for i, b := range batch {
		mg.pollRelay(i)
		if e := b.cmd.Err(); e != nil && e != redis.Nil {
			failed = append(failed, b.op)
			continue
		}
		if b.op.kind == opWrite {
			mg.m.writes.WithLabelValues("write").Inc()
			touched = append(touched, b.op.conf)
			continue
		}
		mg.m.writes.WithLabelValues("remove").Inc()
		if mg.left(b.op, b.cmd) {
			touched = append(touched, b.op.conf)
		}
	}
	if len(failed) > 0 {
		mg.writes.requeue(failed) // both scripts are safe to run again
	}
	return touched
}

// left handles the result of a removal: the instance that removed the
// last participant of a conference nobody ended by a rule counts it as
// ended "empty". It reports whether the conference is to be evaluated.
func (mg *Manager) left(op writeOp, cmd *redis.Cmd) bool {
	mg.log.Info().Str("call_id", op.callID).Str("conf_id", op.conf).Msg("participant left")
	res, _ := cmd.Slice()
	if len(res) != 3 {
		return true
	}
	del, _ := res[0].(int64)
	left, _ := res[1].(int64)
	ended, _ := res[2].(string)
	if del == 1 && left == 0 && ended == "" {
		mg.m.ended.WithLabelValues(string(policy.RuleEmpty)).Inc()
		mg.log.Info().Str("conf_id", op.conf).Str("rule", string(policy.RuleEmpty)).Str("call_id", op.callID).
			Msg("conference ended")
		return false
	}
	return true
}

// statsCmds rewrites this instance's media_stats hash: one HSET of every
// local participant's counters, the fields of calls gone since deleted, a TTL.
func (mg *Manager) statsCmds(ctx context.Context, p redis.Pipeliner, now time.Time, entries []statEntry) {
	key := mg.opts.Keys.MediaStats(mg.opts.Instance)
	fields := make(map[string]struct{}, len(entries))
	args := make([]any, 0, 2*len(entries))
	for i, e := range entries {
		mg.pollRelay(i)
		e.c.AtMs = now.UnixMilli()
		b, err := json.Marshal(e.c)
		if err != nil {
			continue
		}
		fields[e.callID] = struct{}{}
		args = append(args, e.callID, b)
	}
	var gone []string
	for id := range mg.statsFields {
		if _, ok := fields[id]; !ok {
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		p.HDel(ctx, key, gone...)
	}
	if len(args) > 0 {
		p.HSet(ctx, key, args...)
		p.PExpire(ctx, key, statsTTL)
	}
	mg.statsFields = fields
}
