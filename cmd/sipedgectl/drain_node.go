package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// errInvalidNode is returned for a node whose hash sipedge cannot use.
var errInvalidNode = errors.New("invalid node")

// nodeDrainSample judges the node as sipedge does (ring.BuildSnapshotFrom
// under the profiles and settings in Redis) and reads its calls from
// node_calls and its drain deadline from drain_started + drain_timeout.
func (a *app) nodeDrainSample(ctx context.Context, name string, hbTimeout time.Duration) (drainSample, error) {
	view, err := a.loadNodes(ctx, hbTimeout)
	if err != nil {
		return drainSample{}, err
	}
	var r *nodeRow
	for i := range view.rows {
		if view.rows[i].Name == name {
			r = &view.rows[i]
		}
	}
	switch {
	case r == nil:
		return drainSample{}, fmt.Errorf("node %q: %w", name, errUnknownNode)
	case !r.Valid:
		return drainSample{}, fmt.Errorf("node %q: %w: %s", name, errInvalidNode, r.Error)
	}
	s := drainSample{Kind: kindNode, Name: name, State: r.State, Calls: int64(r.NodeCalls), Reason: r.OutReason,
		At: a.now(), DrainStarted: r.drainStarted, DrainAction: drainAction(view.policy.settings.DrainBye)}
	s.Done = !r.InService && r.NodeCalls == 0
	s.KeptActive = r.KeptActive
	s.Draining = !r.InService
	if !s.DrainStarted.IsZero() && view.policy.settings.DrainTimeout > 0 {
		s.Deadline = s.DrainStarted.Add(view.policy.settings.DrainTimeout)
	}
	var notes []string
	if r.KeptActive {
		notes = append(notes, "kept active: it is among the last nodes of site "+orDash(r.Site)+
			" and still takes new conferences")
	}
	if !r.Healthy {
		notes = append(notes, "node not healthy: "+r.Reason)
	}
	if v, bad := view.badCalls[name]; bad {
		notes = append(notes, fmt.Sprintf("node_calls value %q is not a count; counted as 0", v))
	}
	s.Note = strings.Join(notes, "; ")
	return s, nil
}
