package admission

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/ring"
)

// PlacementFailover marks a dialog retried on the next node of the ring
// after the node it was placed on failed it.
const PlacementFailover = "failover"

// NextView is the part of a ring snapshot DecideNext reads.
type NextView interface {
	LookupExcluding(key string, exclude []string) (ring.Node, bool)
}

var _ NextView = (*ring.Snapshot)(nil)

// DecideNext picks the node a new dialog is retried on after the nodes in
// tried failed it: the next node of the ring for its key, as Kamailio's
// ds_next_dst walks its destination list. Sticky placement is not
// consulted: the sticky node is the one that failed, or it would have been
// tried first. The instance verdict is not either: the dialog was already
// admitted. It does no I/O.
func DecideNext(req Request, nodes NextView, tried []string, retryAfter int) Verdict {
	if n, ok := nodes.LookupExcluding(req.Key(), tried); ok {
		return Verdict{Admit: true, Node: n, Placement: PlacementFailover}
	}
	return Verdict{Code: 503, Reason: ReasonNoNode, Cause: CauseNoNode, RetryAfter: retryAfter}
}

// SuspectMarker takes a failed node out of the ring at once (ring.Watcher).
type SuspectMarker interface {
	MarkSuspect(name string) bool
}

var _ SuspectMarker = (*ring.Watcher)(nil)

// Failover is called when the node a new dialog went to failed it (no
// answer, 408 or 5xx before any other response): failed is marked suspect
// so the next dialogs avoid it, and the verdict names the next node of the
// ring excluding every node in tried (failed among them). A conference
// placed on a node in tried follows the dialog to the new node, so its
// later participants join it there and not on the failed node once it is
// back. A Redis failure there is counted and does not stop the retry.
func (a *Admitter) Failover(ctx context.Context, req Request, failed string, tried []string) Verdict {
	if m, ok := a.nodes.(SuspectMarker); ok && failed != "" {
		m.MarkSuspect(failed)
	}
	v := DecideNext(req, a.nodes.Snapshot(), tried, a.cluster.Cluster().Settings.RetryAfter)
	if !v.Admit {
		a.metrics.rejects.WithLabelValues(v.Cause).Inc()
		return v
	}
	a.metrics.placements.WithLabelValues(v.Placement).Inc()
	if req.UsesAOR() || req.ConfID == "" || a.confs == nil {
		return v
	}
	if a.opts.Ledger != nil {
		a.opts.Ledger.ForgetPlaced(req.ConfID) // Move may rewrite the node
	}
	lctx, cancel := context.WithTimeout(ctx, a.opts.RedisTimeout)
	moved, err := a.confs.Move(lctx, req.ConfID, v.Node.Name, tried)
	cancel()
	if err != nil {
		a.metrics.redisErrors.WithLabelValues("conf_move").Inc()
		a.log.Warn().Err(err).Str("call_id", req.CallID).Str("conf_id", req.ConfID).
			Msg("conference placement not moved off the failed node")
	} else if moved {
		a.log.Info().Str("call_id", req.CallID).Str("conf_id", req.ConfID).Str("node", v.Node.Name).
			Strs("from", tried).Msg("conference placement moved off a failed node")
	}
	return v
}

// Healthy reports whether the ring holds node alive right now (not
// suspect, not probed down, heartbeat fresh): a call waiting on a node
// that stops being healthy is failed over.
func (a *Admitter) Healthy(node string) bool { return a.nodes.Snapshot().Healthy(node) }

// A placement moves only when it names one of the failed nodes: another
// instance may have moved it already, or the conference may have ended.
// KEYS: the conference key. ARGV: to, the failed nodes, the conference id,
// the placements channel.
var moveScript = redis.NewScript(`
local n = redis.call('HGET', KEYS[1], 'node')
if not n then return 0 end
for i = 2, #ARGV - 2 do
  if ARGV[i] == n then
    redis.call('HSET', KEYS[1], 'node', ARGV[1])
    redis.call('PUBLISH', ARGV[#ARGV], '~' .. ARGV[#ARGV - 1]) -- keys.MovedMessage: instances drop their local answer (sticky.go)
    return 1
  end
end
return 0
`)

// Move places an active conference on to when it is placed on one of
// from, and reports whether it did.
func (s *ConfStore) Move(ctx context.Context, confID, to string, from []string) (bool, error) {
	if len(from) == 0 {
		return false, nil
	}
	args := make([]any, 0, len(from)+3)
	args = append(args, to)
	for _, f := range from {
		args = append(args, f)
	}
	args = append(args, confID, s.keys.Placements())
	n, err := moveScript.Run(ctx, s.rdb, []string{s.keys.Conf(confID)}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("move placement of conference %q: %w", confID, err)
	}
	return n == 1, nil
}
