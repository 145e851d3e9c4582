package proxy

import (
	"github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/admission"
)

// The counts in Redis are derived from the dialogs this instance set up
// (admission.Ledger): only a dialog that really ends here, or that another
// instance saw end, moves them. These methods make the Proxy its Holder.
var _ admission.Holder = (*Proxy)(nil)

// ConfHolding is what this instance holds of conference conf.
func (p *Proxy) ConfHolding(conf string) admission.ConfHolding {
	n, node := p.dialogs.Conf(conf)
	return admission.ConfHolding{Dialogs: n, Node: node}
}

// NodeDialogs is the number of dialogs on node held here.
func (p *Proxy) NodeDialogs(node string) int { return p.dialogs.NodeDialogs(node) }

// Holdings is this instance's share of every count.
func (p *Proxy) Holdings() admission.Holdings {
	confs, nodes := p.dialogs.counts()
	h := admission.Holdings{Confs: make(map[string]admission.ConfHolding, len(confs)), Nodes: nodes, Total: p.dialogs.Len()}
	for id, c := range confs {
		h.Confs[id] = admission.ConfHolding{Dialogs: c.n, Node: c.node}
	}
	return h
}

// EndNoted forgets the dialogs set up here whose BYE another instance
// relayed; keys it does not hold (already ended, forged) are ignored.
func (p *Proxy) EndNoted(keys []string) int {
	n := 0
	for _, k := range keys {
		dl := p.dialogs.RemoveKey(k)
		if dl == nil {
			continue
		}
		n++
		p.mediaEnded(dl.callID)
		p.metrics.dialogsEnded.WithLabelValues("elsewhere").Inc()
		p.log.Debug().Str("call_id", dl.callID).Str("conf_id", dl.confID).Str("node", dl.node).
			Msg("dialog ended through another instance")
		p.admit.DialogEnded(dl.confID, dl.node)
	}
	if n > 0 {
		p.metrics.dialogsActive.Set(float64(p.dialogs.Len()))
	}
	return n
}

// byeEnds reports whether a final answer to a BYE (408 also stands for no
// answer at all) means the dialog is over: it was accepted, or the other
// side no longer has it (RFC 5057 §5.1), or that side is gone.
func byeEnds(code int) bool {
	return (code >= 200 && code < 300) || code == 481 || code == 408
}

// endOfDialog applies a BYE's final answer code to the dialog it names.
// Only a dialog this instance set up is removed, once: a forged BYE
// (unknown Call-ID or tags), a replayed or retransmitted one, or one the
// node refused changes no count. The BYE of a dialog another instance set
// up (its route state says so) is noted for that instance.
func (p *Proxy) endOfDialog(in *sip.Request, info fwdInfo, code int) {
	if !byeEnds(code) {
		p.metrics.byeIgnored.WithLabelValues("refused").Inc()
		return
	}
	id, ft, tt := callID(in), fromTag(in), toTag(in)
	if dl := p.dialogs.Match(id, ft, tt); dl != nil {
		p.mediaEnded(id)
		if !p.dialogs.Remove(dl) {
			p.metrics.byeIgnored.WithLabelValues("ended").Inc()
			return
		}
		p.metrics.dialogsActive.Set(float64(p.dialogs.Len()))
		p.metrics.dialogsEnded.WithLabelValues("bye").Inc()
		p.admit.DialogEnded(dl.confID, dl.node)
		return
	}
	owner := info.instance
	if info.callerTag == "" || owner == "" || owner == p.opts.Instance {
		// No route state (nothing says who set it up) or ours but unknown:
		// forged, replayed, or already ended.
		p.metrics.byeIgnored.WithLabelValues("unknown").Inc()
		return
	}
	var nodeTag string
	switch info.callerTag {
	case ft:
		nodeTag = tt
	case tt:
		nodeTag = ft
	}
	if nodeTag == "" {
		p.metrics.byeIgnored.WithLabelValues("unknown").Inc()
		return
	}
	p.mediaEnded(id)
	p.admit.DialogEndedElsewhere(p.background(), owner, info.confID, info.node, id, dialogKey(id, info.callerTag, nodeTag))
}
