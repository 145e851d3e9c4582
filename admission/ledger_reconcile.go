package admission

// The reconcile: one instance checks every conference key against the live
// shares, for the keys no live instance's beat carries.

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

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
    if redis.call('DEL', key) == 1 then
      redis.call('PUBLISH', prefix .. 'placements', '-' .. ARGV[i]) -- keys.GoneMessage
      fixed = fixed + 1
    end
  elseif tonumber(cur or '0') ~= s then
    redis.call('HSET', key, 'dialogs', s)
    fixed = fixed + 1
  end
end
return fixed
`)

// turnScript takes or renews the reconciler's lease (KEYS[1]) for ARGV[1],
// for ARGV[2] ms, unless another instance holds it; 1 if it is ARGV[1]'s.
var turnScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// reconcile fixes conference keys no live instance rewrites (restored from
// an old AOF, or left by an instance that died). One instance does it for
// all (keys.Reconciler): it recounts every conference key from every
// share, so with each instance doing it the cluster's cost grew with the
// instances times the conferences. The lease lasts two periods: the
// instance holding it renews it at each of its reconciles, and when that
// instance stops, another takes it at most two periods later. The others
// only scan, for their placement index.
func (l *Ledger) reconcile(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*max(l.opts.RedisTimeout, time.Second))
	defer cancel()
	lease := max(2*l.opts.ReconcileEvery, time.Millisecond)
	mine, err := turnScript.Run(ctx, l.rdb, []string{l.k.Reconciler()}, l.opts.Self, lease.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("take the reconciler's turn: %w", err)
	}
	ids, err := l.scanConfs(ctx)
	if err != nil {
		return err
	}
	if mine != 1 {
		return nil
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

// scanConfs lists the ids of every conference key, and rebuilds the
// placement index (unplaced.go) from them.
func (l *Ledger) scanConfs(ctx context.Context) ([]string, error) {
	var ids []string
	prefix := l.k.Conf("")
	l.index.scanStarted()
	iter := l.rdb.Scan(ctx, 0, l.k.ConfPattern(), 1000).Iterator()
	for iter.Next(ctx) {
		ids = append(ids, iter.Val()[len(prefix):])
	}
	if err := iter.Err(); err != nil {
		l.index.scanDone(nil, false)
		return nil, fmt.Errorf("scan conference keys: %w", err)
	}
	l.index.scanDone(ids, true)
	l.m.indexed.Set(float64(len(ids)))
	return ids, nil
}
