package proxy

import (
	"context"

	"github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/admission"
)

// placement is where an in-dialog request without sipedge's route goes (a
// caller that ignores Record-Route sends it to sipedge's own address).
type placement struct {
	node, confID string
	next         hop
}

// placeInDialog finds that destination. A dialog this instance holds
// answers it locally, from the caller's side only: no Redis round trip on
// the in-dialog path, and the node that really has the call, which after a
// failover or a ring change is not the one admission would pick now.
// Otherwise admission places it as it placed the INVITE. ok is false when
// nobody can take it.
func (p *Proxy) placeInDialog(ctx context.Context, req *sip.Request) (placement, bool) {
	ft := fromTag(req)
	if dl := p.dialogs.Match(callID(req), ft, toTag(req)); dl != nil && ft == dl.callerTag {
		p.metrics.placementHeld.Inc()
		conf := dl.confID
		if conf == "" {
			conf = req.Recipient.User
		}
		return placement{node: dl.node, confID: conf, next: dl.nodeHop}, true
	}
	v := p.admit.Admit(ctx, admission.Request{Method: string(req.Method), CallID: callID(req), ConfID: req.Recipient.User})
	if !v.Admit {
		return placement{}, false
	}
	return placement{node: v.Node.Name, confID: req.Recipient.User,
		next: hop{addr: v.Node.Addr, transport: transportOrUDP(v.Node.Transport)}}, true
}
