package main

import (
	"context"

	"github.com/sipedge/sipedge/ring"
)

// policyView is what the node rules take from Redis besides the nodes:
// the deservice profiles and the settings, parsed leniently (a bad value
// is shown as invalid and its default used), and the ring.Policy built
// from them.
type policyView struct {
	policy      ring.Policy
	settings    settings
	settingRows []settingRow
	profiles    []profileRow
}

func (a *app) loadPolicy(ctx context.Context) (policyView, error) {
	profiles, err := a.loadProfiles(ctx)
	if err != nil {
		return policyView{}, err
	}
	s, rows, err := a.loadSettings(ctx)
	if err != nil {
		return policyView{}, err
	}
	return policyView{policy: buildPolicy(profiles, s), settings: s, settingRows: rows, profiles: profiles}, nil
}

// buildPolicy maps every server a deservice profile lists to the first
// such profile by id, as the node rules want it.
func buildPolicy(profiles []profileRow, s settings) ring.Policy {
	p := ring.Policy{DeservicedServers: map[string]string{}, SlowStart: s.SlowStart, DrainTimeout: s.DrainTimeout}
	for server, ids := range deservicedBy(profiles) {
		p.DeservicedServers[server] = ids[0]
	}
	return p
}
