package proxy

import "github.com/emiago/sipgo/sip"

// A listenRef names one listen address in one byte, so a dialog can keep
// the address each of its legs uses: 0 unknown, 1 the first (Options.Listen),
// 2+i Options.ListenExtra[i], then the TLS/WS/WSS listeners in order.
type listenRef uint8

// refOf is the reference of listen address a (0 when it is none of ours).
func (p *Proxy) refOf(a listenAddr) listenRef {
	n := -1
	switch {
	case a.tp != "":
		for i := range p.secure {
			if s := p.secure[i].listenAddr; s.tp == a.tp && s.host == a.host && s.port == a.port {
				n = len(p.extra) + i
				break
			}
		}
	case a.host == p.advHost && a.port == p.advPort:
		return 1
	default:
		n = p.extraNamed(a.host, a.port)
	}
	if n < 0 || n >= 254 {
		return 0
	}
	return listenRef(n + 2)
}

// addrOf is the listen address r names.
func (p *Proxy) addrOf(r listenRef) (listenAddr, bool) {
	i := int(r) - 2
	switch {
	case r == 0:
		return listenAddr{}, false
	case r == 1:
		return p.firstAddr(), true
	case i < len(p.extra):
		return p.extra[i].listenAddr, true
	case i-len(p.extra) < len(p.secure):
		return p.secure[i-len(p.extra)].listenAddr, true
	}
	return listenAddr{}, false
}

// legRefs are the listen addresses the two legs of a dialog set up by in
// (relayed to nodeHop) use: the caller's is the one in arrived on (the
// Record-Route toward the caller names it), the node's the one the INVITE
// left from (the top Record-Route names it).
func (p *Proxy) legRefs(in *sip.Request, callerKnown bool, nodeHop hop) (caller, node listenRef) {
	if callerKnown {
		caller = p.refOf(p.arrivedOn(in))
	}
	return caller, p.refOf(p.sendsFromAddr(in, nodeHop.addr))
}

// leaveFrom makes a request sipedge sends on its own in a dialog (BYE, the
// ACK of a late 2xx) leave from the listen address r of that leg, and
// names it in the top Via, which prepareForward filled in: the peer knows
// that address from the Record-Route, not the first one of its family.
func (p *Proxy) leaveFrom(out *sip.Request, next hop, r listenRef) {
	a, ok := p.addrOf(r)
	if !ok {
		return // not recorded: prepareForward's choice stands
	}
	a = p.onTransport(a, next.transport)
	if via := out.Via(); via != nil {
		via.Host, via.Port = a.host, a.port
	}
	if next.transport == "udp" {
		out.Laddr = a.la
	}
}
