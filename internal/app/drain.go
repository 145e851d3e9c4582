package app

import (
	"context"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/proxy"
	"github.com/sipedge/sipedge/ring"
)

// drainPolicy is the drain timeout and action of the settings (SPEC §4)
// for the ring's DrainEnforcer.
type drainPolicy struct{ *admission.StateWatcher }

var _ ring.DrainPolicy = drainPolicy{}

func (d drainPolicy) DrainBye() bool { return d.Cluster().Settings.DrainBye }

// endNodeCalls ends the dialogs px holds on a node.
func endNodeCalls(px *proxy.Proxy) ring.EndNodeCalls {
	return func(ctx context.Context, node, reason string) int {
		return px.EndDialogs(ctx, func(d proxy.Dialog) bool { return d.Node == node }, reason)
	}
}
