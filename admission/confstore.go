package admission

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/keys"
)

// ConfStore keeps the sticky placement of active conferences in
// sipedge:conf:<id> (fields node, started, dialogs, instance).
type ConfStore struct {
	rdb  redis.UniversalClient
	keys keys.Keys
	ttl  time.Duration
}

// NewConfStore returns a store whose keys expire after ttl without activity,
// a safety net for dialogs whose BYE never passed through sipedge.
func NewConfStore(rdb redis.UniversalClient, k keys.Keys, ttl time.Duration) *ConfStore {
	return &ConfStore{rdb: rdb, keys: k, ttl: ttl}
}

// Node returns the node an active conference is placed on, "" if none.
func (s *ConfStore) Node(ctx context.Context, confID string) (string, error) {
	node, err := s.rdb.HGet(ctx, s.keys.Conf(confID), "node").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read placement of conference %q: %w", confID, err)
	}
	return node, nil
}

// The first dialog places the conference; later ones only count. HSETNX
// keeps the first placement if two instances race on the first 2xx.
var startScript = redis.NewScript(`
redis.call('HSETNX', KEYS[1], 'node', ARGV[1])
redis.call('HSETNX', KEYS[1], 'started', ARGV[2])
redis.call('HSETNX', KEYS[1], 'instance', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'dialogs', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
return redis.call('HGET', KEYS[1], 'node')
`)

// The last dialog to end removes the placement. The node's call count
// never goes below zero (a BYE from both sides ends one dialog once).
var endScript = redis.NewScript(`
for i = 1, 2 do
  if ARGV[i] ~= '' then
    local c = redis.call('HINCRBY', KEYS[i + 1], ARGV[i], -1)
    if c <= 0 then redis.call('HDEL', KEYS[i + 1], ARGV[i]) end
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = redis.call('HINCRBY', KEYS[1], 'dialogs', -1)
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
`)

// DialogStarted records an established dialog of a conference on node and
// returns the node the conference is placed on.
func (s *ConfStore) DialogStarted(ctx context.Context, confID, node, instance string, now time.Time) (string, error) {
	placed, err := startScript.Run(ctx, s.rdb, []string{s.keys.Conf(confID), s.keys.NodeCalls(), s.keys.InstanceCalls()},
		node, strconv.FormatInt(now.UnixMilli(), 10), instance, s.ttl.Milliseconds()).Text()
	if err != nil {
		return "", fmt.Errorf("record dialog of conference %q: %w", confID, err)
	}
	return placed, nil
}

// DialogEnded records the end of one dialog of confID on node, established
// by instance; it returns the dialogs left in the conference (-1 when it was
// not known).
func (s *ConfStore) DialogEnded(ctx context.Context, confID, node, instance string) (int64, error) {
	n, err := endScript.Run(ctx, s.rdb, []string{s.keys.Conf(confID), s.keys.NodeCalls(), s.keys.InstanceCalls()},
		node, instance).Int64()
	if err != nil {
		return 0, fmt.Errorf("end dialog of conference %q: %w", confID, err)
	}
	return n, nil
}

// InstanceCalls is the number of active conference dialogs established by
// instance, wherever their BYE passes.
func (s *ConfStore) InstanceCalls(ctx context.Context, instance string) (int, error) {
	n, err := s.rdb.HGet(ctx, s.keys.InstanceCalls(), instance).Int()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read calls of instance %q: %w", instance, err)
	}
	return n, nil
}
