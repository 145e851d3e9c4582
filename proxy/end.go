package proxy

import (
	"context"
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"
)

// newDialog records a dialog established by a 2xx to an initial INVITE.
func (p *Proxy) newDialogRecord(in *sip.Request, res *sip.Response, info fwdInfo, callerHop, nodeHop hop) *dialog {
	dl := &dialog{callID: callID(in), confID: info.confID, node: info.node,
		callerHop: callerHop, nodeHop: nodeHop, started: time.Now()}
	dl.callerAt, dl.nodeAt = p.legRefs(in, callerHop.addr != "", nodeHop)
	// The headers themselves, not clones: nothing changes a header once
	// parsed (clone.go), and each holds only its own value string.
	dl.from, dl.to = in.From(), res.To()
	dl.callerContact, dl.nodeContact = contactOf(in), contactOf(res) // contact.go
	if cs := in.CSeq(); cs != nil {
		dl.noteCSeq(true, cs.SeqNo)
	}
	return dl
}

// Dialogs lists the dialogs this instance holds.
func (p *Proxy) Dialogs() []Dialog {
	var out []Dialog
	for _, dl := range p.dialogs.Select(func(*dialog) bool { return true }) {
		out = append(out, Dialog{CallID: dl.callID, ConfID: dl.confID, Node: dl.node, Started: dl.started})
	}
	return out
}

// EndDialogs ends every dialog held here for which match is true: a BYE to
// the caller and one to the node, each with `Reason: SIP;cause=200;text=…`.
// It returns how many dialogs it ended.
func (p *Proxy) EndDialogs(ctx context.Context, match func(Dialog) bool, reason string) int {
	victims := p.dialogs.Select(func(dl *dialog) bool {
		return match(Dialog{CallID: dl.callID, ConfID: dl.confID, Node: dl.node, Started: dl.started})
	})
	for _, dl := range victims {
		if !p.dialogs.Remove(dl) {
			continue // ended meanwhile
		}
		p.metrics.dialogsActive.Set(float64(p.dialogs.Len()))
		p.mediaEnded(dl.callID)
		p.log.Info().Str("call_id", dl.callID).Str("conf_id", dl.confID).Str("node", dl.node).
			Str("reason", reason).Msg("ending call: BYE to both legs")
		p.spawn(ctx, func(ctx context.Context) { p.sendBye(ctx, dl, true, reason) })
		p.spawn(ctx, func(ctx context.Context) { p.sendBye(ctx, dl, false, reason) })
		p.admit.DialogEnded(dl.confID, dl.node)
		p.metrics.endedBySipedge.WithLabelValues(reason).Inc()
	}
	return len(victims)
}

// sendBye sends sipedge's own BYE to one leg of dl.
func (p *Proxy) sendBye(ctx context.Context, dl *dialog, toCaller bool, reason string) {
	contact, next, at := dl.nodeContact, dl.nodeHop, dl.nodeAt
	var from sip.Header = sip.HeaderClone(dl.from)
	var to sip.Header = sip.HeaderClone(dl.to)
	seq := dl.cseqCaller.Load() + 1
	if toCaller {
		// Toward the caller the node is the sender: its tag goes in From.
		contact, next, at = dl.callerContact, dl.callerHop, dl.callerAt
		from = &sip.FromHeader{DisplayName: dl.to.DisplayName, Address: dl.to.Address, Params: dl.to.Params.Clone()}
		to = &sip.ToHeader{DisplayName: dl.from.DisplayName, Address: dl.from.Address, Params: dl.from.Params.Clone()}
		seq = dl.cseqNode.Load() + 1
	}
	target, _ := contactURI(contact)
	bye := sip.NewRequest(sip.BYE, target)
	bye.AppendHeader(from)
	bye.AppendHeader(to)
	id := sip.CallIDHeader(dl.callID)
	bye.AppendHeader(&id)
	bye.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: sip.BYE})
	bye.AppendHeader(sip.NewHeader("Reason", fmt.Sprintf("SIP;cause=200;text=%q", reason)))
	bye.SetBody(nil)
	out := bye
	// prepareForward adds our Via and Max-Forwards and sets the hop; the
	// "incoming" request is the BYE itself (no Via of a sender to mark).
	p.prepareForward(bye, out, next, p.branch(nil, bye), nil)
	p.leaveFrom(out, next, at) // the address this leg knows (byefrom.go)
	bctx, cancel := context.WithTimeout(ctx, 32*time.Second)
	defer cancel()
	res, err := p.client.Do(bctx, out, keepAsBuilt)
	leg := "node"
	if toCaller {
		leg = "caller"
	}
	if err != nil && bctx.Err() == nil {
		p.notSent("BYE to "+leg, dl.callID, 0, err)
		return
	}
	if err != nil || res == nil { // nil, nil: the client closed while waiting (shutdown)
		p.log.Warn().Err(err).Str("call_id", dl.callID).Str("leg", leg).Msg("BYE sent by sipedge got no answer")
		return
	}
	p.log.Debug().Str("call_id", dl.callID).Str("leg", leg).Int("code", res.StatusCode).Msg("BYE sent by sipedge answered")
}
