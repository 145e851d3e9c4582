package ring

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/keys"
)

// Policy is what the node rules need beyond the node hashes.
type Policy struct {
	DeservicedServers map[string]string // server name -> id of the deservice profile listing it
	SlowStart         time.Duration     // 0 = no ramp
	DrainTimeout      time.Duration     // 0 = never
}

// PolicySource yields the current Policy; the admission package implements
// it from the deservice profiles and settings it loads.
type PolicySource interface{ NodePolicy() Policy }

// Service states of a node (NodeStatus.State).
const (
	StateNormal      = "normal"      // in service
	StateDraining    = "draining"    // out of service, calls still on it
	StateMaintenance = "maintenance" // out of service, no calls: safe to stop
)

// Why a node is out of service, as NodeStatus.OutReason shows it. A
// deserviced node's reason is ReasonDeservicedPrefix + the profile id.
const (
	ReasonForcedMaintenance = "forced maintenance (capable=0)"
	ReasonDeservicedPrefix  = "deserviced by profile "
	ReasonManualMaintenance = "manual maintenance"
)

// outReason says why n may not take new conferences, "" when it may. When
// several reasons hold, the one shown is the first of: capable=0 (no flag
// an operator sets can lift it), a deservice profile, the manual flag.
func outReason(n Node, p Policy) string {
	if !n.Capable {
		return ReasonForcedMaintenance
	}
	if id, ok := p.DeservicedServers[n.Server]; ok && n.Server != "" {
		return ReasonDeservicedPrefix + id
	}
	if n.Maintenance {
		return ReasonManualMaintenance
	}
	return ""
}

// rampWeight is the ring weight of an in-service node during slow start:
// weight * (now - restored_at) / slow_start, clamped to [0, weight]. A node
// back in service whose return is not yet recorded (drain_started still set)
// is at the very start of its ramp.
func rampWeight(n Node, now time.Time, slowStart time.Duration) float64 {
	switch {
	case slowStart <= 0:
		return n.Weight
	case !n.DrainStarted.IsZero():
		return 0
	case n.RestoredAt.IsZero():
		return n.Weight
	}
	el := now.Sub(n.RestoredAt)
	switch {
	case el >= slowStart:
		return n.Weight
	case el <= 0:
		return 0
	}
	return n.Weight * (float64(el) / float64(slowStart))
}

// The transition scripts run atomically in Redis, so instances that see a
// change at the same moment agree on one drain_started and one restored_at.
// Neither creates the hash of a node that was removed meanwhile.
var (
	markOutScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], 'drain_started', ARGV[1])`)

	markInScript = redis.NewScript(`
if redis.call('HDEL', KEYS[1], 'drain_started') == 1 then
  redis.call('HSET', KEYS[1], 'restored_at', ARGV[1])
  return {1, ARGV[1]}
end
return {0, redis.call('HGET', KEYS[1], 'restored_at') or ''}`)
)

// MarkOutOfService records that node went out of service at now, unless a
// drain start is already recorded (the earliest writer wins). Idempotent.
func MarkOutOfService(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, node string, now time.Time) error {
	_, err := markOut(ctx, rdb, k, node, now)
	return err
}

func markOut(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, node string, now time.Time) (wrote bool, err error) {
	n, err := markOutScript.Run(ctx, rdb, []string{k.Node(node)}, now.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("mark node %q out of service: %w", node, err)
	}
	return n == 1, nil
}

// MarkInService records that node came back into service: it removes
// drain_started and, only if this call removed it, sets restored_at to now,
// which starts the slow-start ramp. restored reports whether this call made
// the transition; of concurrent callers exactly one does. Idempotent.
func MarkInService(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, node string, now time.Time) (restored bool, err error) {
	restored, _, err = markIn(ctx, rdb, k, node, now)
	return restored, err
}

// markIn also returns the restored_at now in Redis (zero if none), so the
// caller can ramp from the right moment without reading the node again.
func markIn(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, node string, now time.Time) (restored bool, at time.Time, err error) {
	res, err := markInScript.Run(ctx, rdb, []string{k.Node(node)}, now.UnixMilli()).Slice()
	if err != nil {
		return false, time.Time{}, fmt.Errorf("mark node %q in service: %w", node, err)
	}
	if len(res) == 2 {
		restored = res[0] == int64(1)
		if s, ok := res[1].(string); ok {
			if ms, err := strconv.ParseInt(s, 10, 64); err == nil && ms >= 0 {
				at = time.UnixMilli(ms)
			}
		}
	}
	return restored, at, nil
}
