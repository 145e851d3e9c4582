package main

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/view"
	"github.com/sipedge/sipedge/ring"
)

// seen is what the live sipedge instances publish of the media nodes
// (internal/view): probe results and suspects live only in the instances,
// so without it the CLI would show a node that fails its probes as
// healthy and name it as the ring's choice.
type seen struct {
	instances []string            // live instances that published a view
	probeDown map[string][]string // node -> instances whose probes fail it
	suspects  map[string][]string // node -> instances holding it suspect
	downOn    map[string][]string // node -> instances that see it unhealthy or suspect
}

func (a *app) loadSeen(ctx context.Context, cs *contract.Snapshot, now time.Time, hbTimeout time.Duration) (seen, error) {
	var live []string
	for _, name := range slices.Sorted(maps.Keys(cs.Instances)) {
		if in := cs.Instances[name]; !in.Heartbeat.IsZero() && now.Sub(in.Heartbeat) < hbTimeout {
			live = append(live, name)
		}
	}
	views, _, err := view.Load(ctx, a.rdb, a.k, live)
	if err != nil {
		return seen{}, redisErr("read the instances' node views", err)
	}
	s := seen{probeDown: map[string][]string{}, suspects: map[string][]string{}, downOn: map[string][]string{}}
	for _, inst := range live {
		v, ok := views[inst]
		if !ok {
			continue
		}
		s.instances = append(s.instances, inst)
		for _, n := range v.Nodes {
			switch {
			case strings.HasPrefix(n.Reason, ring.ReasonProbeDown):
				s.probeDown[n.Name] = append(s.probeDown[n.Name], inst)
			case strings.HasPrefix(n.Reason, ring.ReasonSuspect):
				s.suspects[n.Name] = append(s.suspects[n.Name], inst)
			case n.Healthy:
				continue
			}
			s.downOn[n.Name] = append(s.downOn[n.Name], inst)
		}
	}
	return s, nil
}

// probeUp: a node is down when a live instance's probes fail it.
func (s seen) probeUp(node string) bool { return len(s.probeDown[node]) == 0 }

func (s seen) suspect(node string) bool { return len(s.suspects[node]) > 0 }

func (s seen) note() string {
	if len(s.instances) == 0 {
		return probeNote
	}
	return "health includes the SIP OPTIONS probes of " + strings.Join(s.instances, ", ")
}
