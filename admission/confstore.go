package admission

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/keys"
)

// ConfStore reads the sticky placement of active conferences in
// sipedge:conf:<id> (fields node, started, dialogs, instance); the Ledger
// writes them.
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
