package app

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/proxy"
	"github.com/sipedge/sipedge/ring"
)

// enforceDrains ends, every tick, the calls this instance holds on nodes
// whose drain outlived drain_timeout, when the drain action is bye (SPEC
// §4). Every instance does it for its own dialogs, so the node empties.
func enforceDrains(ctx context.Context, every time.Duration, nodes *ring.Watcher, state *admission.StateWatcher,
	px *proxy.Proxy, log zerolog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !state.Cluster().Settings.DrainBye {
			continue
		}
		for _, st := range nodes.Snapshot().Statuses() {
			if !st.DrainExpired {
				continue
			}
			name := st.Node.Name
			if n := px.EndDialogs(ctx, func(d proxy.Dialog) bool { return d.Node == name }, "drain timeout"); n > 0 {
				log.Warn().Str("node", name).Int("calls", n).Msg("drain timeout: ended the calls still on the node")
			}
		}
	}
}
