package proxy

import (
	"net/netip"

	"github.com/emiago/sipgo/sip"
)

// nodeCall forwards a call a media node places into its own conference
// (adp, or one an operator asked for with `sipedgectl conf dial`): the
// callee in the Request-URI is the participant's endpoint. Only media
// nodes get here, and the target must be an IP literal: sipedge resolves
// nothing a message names. A call not proven to come from a node
// (trustNew: over UDP a valid X-Sipedge-Auth) gets 403 and sends nothing on.
func (p *Proxy) nodeCall(req *sip.Request, tx sip.ServerTransaction, node string, trusted bool, conf string) {
	id := callID(req)
	if !trusted {
		p.refuseNodeCall(req, tx, "unproven")
		return
	}
	if node == "" {
		p.refuseNodeCall(req, tx, "not_a_node")
		return
	}
	addr, err := netip.ParseAddr(req.Recipient.Host)
	if err != nil {
		p.reply(tx, req, 403, "Forbidden (node call target must be an IP address)")
		return
	}
	port := req.Recipient.Port
	if port == 0 {
		port = 5060
	}
	target := netip.AddrPortFrom(addr.Unmap(), uint16(port)).String()
	transport := "udp"
	if t, ok := req.Recipient.UriParams.Get("transport"); ok && lower(t) == "tcp" {
		transport = "tcp"
	}

	out := req.Clone()
	p.dropOwnRoutes(out)
	removeTrusted(out) // internal to sipedge and its nodes: the callee never sees them
	j := joinOf(req, conf, true, &req.Recipient)
	if j.Kind == "" {
		j.Kind = "adp"
	}
	info := fwdInfo{confID: conf, node: node, newDialog: true, fromCaller: true, join: &j}
	if !p.openMedia(tx, req, out, &info, false) {
		return
	}
	st := routeState{
		NodeName: node, NodeAddr: target, NodeTransport: transport,
		PeerAddr: req.Source(), PeerTransport: lower(req.Transport()),
		FromTag: fromTag(req), Instance: p.opts.Instance, ConfID: conf,
	}
	info.routes = p.recordRoute(req, st)
	p.log.Info().Str("call_id", id).Str("conf_id", conf).Str("node", node).Str("to", target).
		Str("kind", j.Kind).Str("role", j.Role).Str("keep_alive", j.KeepAlive).Msg("node call into its conference")
	p.forward(req, tx, out, hop{addr: target, transport: transport}, info)
}

// fromURI is the caller's address (its AOR is the participant's identity).
func fromURI(req *sip.Request) *sip.Uri {
	if f := req.From(); f != nil {
		return &f.Address
	}
	return nil
}

// dropOwnRoutes removes the Route entries on top that name this proxy
// without sipedge's route state: a UA that uses sipedge as its outbound
// proxy preloads one (RFC 3261 §16.4: a proxy removes itself).
func (p *Proxy) dropOwnRoutes(out *sip.Request) {
	for {
		h := findHeader(out, "Route") // GetHeader lower-cases every other name on the way
		rh, ok := h.(*sip.RouteHeader)
		if !ok || rh == nil {
			return
		}
		if _, stateful := rh.Address.UriParams.Get(routeParam); stateful || !p.namesUs(&rh.Address) {
			return
		}
		out.RemoveHeader("Route")
	}
}
