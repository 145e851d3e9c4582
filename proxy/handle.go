package proxy

import (
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/admission"
)

// onRequest is the entry point of every request that starts a server
// transaction (sipgo absorbs retransmissions and matched CANCELs itself).
func (p *Proxy) onRequest(req *sip.Request, tx sip.ServerTransaction) {
	p.seq.wait(req) // after every earlier request of its dialog (sequence.go)
	defer p.seq.handedOn(req)
	if p.lateRetransmission(req, tx) { // finished_tx.go
		return
	}
	p.metrics.countRequest(req.Method)
	if req.IsAck() {
		p.forwardAck(req)
		return
	}
	if p.insane(req, tx) { // sanity.go
		return
	}
	if reason := malformed(req); reason != "" {
		p.metrics.malformed.WithLabelValues(reason).Inc()
		p.log.Debug().Str("call_id", callID(req)).Str("reason", reason).Msg("malformed request rejected")
		p.reply(tx, req, 400, "Bad Request ("+reason+")")
		return
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		p.reply(tx, req, 483, "Too Many Hops")
		return
	}
	if p.isLoop(req) {
		p.reply(tx, req, 482, "Loop Detected")
		return
	}
	if req.IsCancel() {
		// Matched CANCELs never reach us: sipgo pairs them with their INVITE
		// transaction. An unmatched one is for a transaction we do not have.
		p.reply(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	if st, n, err := p.ourRoute(req); err != nil || n > 0 || hasToTag(req) {
		p.inDialog(req, tx, st, n, err)
		return
	}
	p.newDialog(req, tx)
}

// newCall is what a new dialog's forwarding needs, in one allocation: the
// call's state and its retry plan (failover.go).
type newCall struct {
	call fwdCall
	plan failover
}

// newDialog handles an out-of-dialog request: admission picks the node.
func (p *Proxy) newDialog(req *sip.Request, tx sip.ServerTransaction) {
	if req.Method == sip.OPTIONS && req.Recipient.User == "" {
		p.answerOptions(req, tx) // probes of sipedge itself: never limited
		return
	}
	if p.limitNewDialog(req, tx) {
		return
	}
	defer p.newDialogDone(req)
	if req.IsInvite() {
		// Answer at once so the caller stops retransmitting while Redis is asked.
		p.respond(tx, tryingFor(req)) // trying.go
	}
	node, trusted := p.trustNew(req)
	if req.IsInvite() {
		if conf := headerValue(req, hdrConference); conf != "" {
			p.nodeCall(req, tx, node, trusted, conf)
			return
		}
	}
	areq := admission.Request{Method: string(req.Method), CallID: callID(req), ConfID: req.Recipient.User}
	if to := req.To(); to != nil {
		areq.AOR = to.Address.User + "@" + to.Address.Host
	}
	if areq.Key() == "" {
		p.reply(tx, req, 404, "Not Found (no conference id in Request-URI)")
		return
	}
	nc := &newCall{} // made first: the call's context serves admission
	c := &nc.call
	ctx := c.txContext(tx)
	v := p.admit.Admit(ctx, areq)
	if !v.Admit {
		res := sip.NewResponseFromRequest(req, v.Code, v.Reason, nil)
		switch v.Code {
		case 503:
			res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(v.RetryAfter)))
		case 302: // deserviced: try the instance admission chose instead
			host, port := splitHostPort(v.Contact)
			res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: req.Recipient.User, Host: host, Port: port}})
		}
		p.respond(tx, res)
		return
	}
	p.log.Debug().Str("call_id", areq.CallID).Str("method", areq.Method).Str("conf_id", areq.ConfID).
		Str("node", v.Node.Name).Str("placement", v.Placement).Msg("new dialog admitted")

	out := forwardCopy(req)
	out.Recipient.Host, out.Recipient.Port = splitHostPort(v.Node.Addr)
	p.dropOwnRoutes(out)
	if !trusted {
		p.stripTrusted(out)
	}
	info := fwdInfo{node: v.Node.Name, newDialog: true, fromCaller: true, ctx: ctx}
	if req.Method == sip.INVITE {
		info.confID = areq.ConfID
		if p.media != nil { // the participant record: anchoring only
			j := joinOf(req, areq.ConfID, trusted, fromURI(req))
			info.join = &j
		}
		if !p.openMedia(tx, req, out, &info, true) {
			return
		}
	}
	nodeTransport := transportOrUDP(v.Node.Transport)
	st := routeState{
		NodeName: v.Node.Name, NodeAddr: v.Node.Addr, NodeTransport: nodeTransport,
		PeerAddr: req.Source(), PeerTransport: lower(req.Transport()),
		FromTag: fromTag(req), Instance: p.opts.Instance,
	}
	st.ConfID = info.confID
	if p.planFailover(&nc.plan, req, areq, out, st) {
		info.failover = &nc.plan
	}
	if req.Method == sip.INVITE || req.Method == sip.SUBSCRIBE {
		info.routes = p.recordRoute(req, st)
	}
	c.next, c.info = hop{addr: v.Node.Addr, transport: nodeTransport}, info
	p.forwardCall(req, tx, out, c)
}

// inDialog routes a request carrying sipedge's Record-Route state.
func (p *Proxy) inDialog(req *sip.Request, tx sip.ServerTransaction, st routeState, n int, err error) {
	if err == nil && n == 0 && p.addressedToUs(req) && req.Recipient.User != "" {
		p.inDialogByPlacement(req, tx)
		return
	}
	if err != nil || n == 0 {
		p.metrics.badRoutes.Inc()
		p.log.Debug().Str("call_id", callID(req)).AnErr("route_error", err).Msg("in-dialog request without a valid sipedge route")
		p.reply(tx, req, 404, "Not Here")
		return
	}
	out := forwardCopy(req)
	dropRoutes(out, n)
	// Nothing in a dialog needs these headers: never pass them on, and
	// count them only when an untrusted source tried.
	if _, trusted := p.trust(req); trusted {
		removeTrusted(out)
	} else {
		p.stripTrusted(out)
	}
	fromCaller := fromTag(req) == st.FromTag
	if err := p.anchor(out, callID(req), fromCaller); err != nil {
		if req.Method == sip.INVITE || req.Method == sip.UPDATE {
			p.rejectSDP(tx, req, err)
			return
		}
		p.metrics.sdpRejected.WithLabelValues("passed").Inc()
	}
	next := p.nextHop(req, st)
	if dl := p.dialogs.Match(callID(req), fromTag(req), toTag(req)); dl != nil {
		if cs := req.CSeq(); cs != nil {
			dl.noteCSeq(fromCaller, cs.SeqNo)
		}
	}
	info := fwdInfo{confID: st.ConfID, node: st.NodeName, instance: st.Instance, endsDialog: req.Method == sip.BYE,
		fromCaller: fromCaller, callerTag: st.FromTag}
	p.forward(req, tx, out, next, info)
}

// inDialogByPlacement serves callers that ignore Record-Route (sipp's
// built-in scenarios, simple softphones): an in-dialog request sent to
// sipedge's own address goes to the node of its conference, found the same
// way as for the INVITE. The destination is still one sipedge chose.
func (p *Proxy) inDialogByPlacement(req *sip.Request, tx sip.ServerTransaction) {
	p.metrics.placementRouted.Inc()
	tx, refused := p.limitPlacement(req, tx)
	if refused {
		return
	}
	defer p.placementDone(req, tx)
	pl, ok := p.placeInDialog(txContext(tx), req)
	if !ok {
		p.reply(tx, req, 404, "Not Here")
		return
	}
	out := forwardCopy(req)
	out.Recipient.Host, out.Recipient.Port = splitHostPort(pl.next.addr)
	p.stripTrusted(out)
	if err := p.anchor(out, callID(req), true); err != nil && (req.Method == sip.INVITE || req.Method == sip.UPDATE) {
		p.rejectSDP(tx, req, err)
		return
	}
	p.limitPortsOpened(callID(req))
	info := fwdInfo{confID: pl.confID, node: pl.node, instance: p.opts.Instance, endsDialog: req.Method == sip.BYE,
		fromCaller: true}
	p.forward(req, tx, out, pl.next, info)
}

// addressedToUs reports whether the Request-URI names this proxy.
func (p *Proxy) addressedToUs(req *sip.Request) bool { return p.namesUs(&req.Recipient) }

// namesUs reports whether a URI's host and port are this proxy's.
func (p *Proxy) namesUs(u *sip.Uri) bool {
	port := u.Port
	if port == 0 {
		port = 5060
	}
	if len(p.extra) > 0 {
		return p.isOurs(u.Host, port) // several listen addresses (listeners.go)
	}
	// An IPv6 host may come bracketed ("[::1]") or not.
	return strings.Trim(u.Host, "[]") == strings.Trim(p.advHost, "[]") && port == p.advPort
}

// nextHop picks the direction: requests from the dialog's caller go to the
// node, everything else goes back to the address the caller used.
func (p *Proxy) nextHop(req *sip.Request, st routeState) hop {
	if fromTag(req) == st.FromTag {
		return hop{addr: st.NodeAddr, transport: st.NodeTransport}
	}
	return hop{addr: st.PeerAddr, transport: st.PeerTransport}
}

// forwardAck relays an ACK for a 2xx (a transaction of its own) statelessly.
// ACKs for non-2xx never get here: their INVITE transaction absorbs them.
func (p *Proxy) forwardAck(req *sip.Request) {
	p.limitAcked(req)
	st, n, err := p.ourRoute(req)
	var next hop
	out := forwardCopy(req)
	switch {
	case err == nil && n > 0:
		dropRoutes(out, n)
		next = p.nextHop(req, st)
	case err == nil && p.addressedToUs(req) && req.Recipient.User != "":
		p.metrics.placementRouted.Inc()
		pl, ok := p.placeInDialog(p.background(), req) // an ACK of a 2xx has no transaction of its own
		if !ok {
			return
		}
		out.Recipient.Host, out.Recipient.Port = splitHostPort(pl.next.addr)
		next = pl.next
	default:
		p.metrics.badRoutes.Inc()
		p.log.Debug().Str("call_id", callID(req)).AnErr("route_error", err).Msg("ACK without a sipedge route dropped")
		return
	}
	// An ACK may carry the answer to an offer made in a 2xx (late offer).
	if err := p.anchor(out, callID(req), n == 0 || fromTag(req) == st.FromTag); err != nil {
		p.metrics.sdpRejected.WithLabelValues("passed").Inc()
		p.log.Warn().Err(err).Str("call_id", callID(req)).Msg("SDP of an ACK cannot be anchored: passed unchanged")
	}
	var br [branchRoom]byte
	p.prepareForward(req, out, next, statelessBranch(br[:0], req), nil)
	if err := p.client.WriteRequest(out, keepAsBuilt); err != nil {
		p.metrics.forwardErrors.WithLabelValues("ACK").Inc()
		p.notSent("ACK", callID(req), 0, err)
	}
}

// answerOptions replies to OPTIONS addressed to sipedge itself (load
// balancer and monitoring probes).
func (p *Proxy) answerOptions(req *sip.Request, tx sip.ServerTransaction) {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, MESSAGE, PRACK, UPDATE"))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	p.respond(tx, res)
}

func (p *Proxy) reply(tx sip.ServerTransaction, req *sip.Request, code int, reason string) {
	p.respond(tx, sip.NewResponseFromRequest(req, code, reason, nil))
}

func (p *Proxy) respond(tx sip.ServerTransaction, res *sip.Response) {
	if p.opts.UserAgent != "" {
		res.AppendHeader(p.serverHeader())
	}
	p.metrics.countResponse(res)
	if _, err := p.respondTx(tx, res); err != nil {
		p.notSent("response", callIDRes(res), res.StatusCode, err)
	}
}
