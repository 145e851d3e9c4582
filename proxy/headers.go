package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Branches sipedge writes start with this after the RFC 3261 cookie; the
// next 16 hex digits are the loop-detection hash (RFC 3261 §16.6 step 8).
const branchMark = sip.RFC3261BranchMagicCookie + "sE"

// malformed returns why a request cannot be proxied, "" if it can.
func malformed(req *sip.Request) string {
	switch {
	case req.Via() == nil:
		return "missing Via"
	case req.From() == nil:
		return "missing From"
	case req.To() == nil:
		return "missing To"
	case req.CallID() == nil || string(*req.CallID()) == "":
		return "missing Call-ID"
	case req.CSeq() == nil:
		return "missing CSeq"
	case !strings.EqualFold(string(req.CSeq().MethodName), string(req.Method)) && !req.IsAck() && !req.IsCancel():
		// EqualFold: sipgo upper-cases the request line's method only
		// (RFC 4475 intmeth); a different method is still refused.
		return "CSeq method mismatch"
	case fromTag(req) == "":
		return "missing From tag"
	case req.Recipient.Host == "":
		return "bad Request-URI"
	}
	return ""
}

func hasToTag(req *sip.Request) bool { return toTag(req) != "" }

func fromTag(req *sip.Request) string {
	if from := req.From(); from != nil {
		return tagParam(from.Params)
	}
	return ""
}

func toTag(req *sip.Request) string {
	if to := req.To(); to != nil {
		return tagParam(to.Params)
	}
	return ""
}

// tagParam is the tag of a From or To header: the one reading of a tag, so
// that a dialog recorded from one message is found again from the next.
func tagParam(params sip.HeaderParams) string {
	if tag, ok := params.Get("tag"); ok {
		return tag
	}
	// LWS around '=' (RFC 4475 wsinv) leaves sipgo with a padded key.
	for _, kv := range params {
		if strings.TrimSpace(kv.K) == "tag" {
			return strings.TrimSpace(kv.V)
		}
	}
	return ""
}

func callID(req *sip.Request) string {
	if id := req.CallID(); id != nil {
		return string(*id)
	}
	return ""
}

func callIDRes(res *sip.Response) string {
	if id := res.CallID(); id != nil {
		return string(*id)
	}
	return ""
}

// ourRoute reads the sipedge Route entries at the top of the route set
// (one, or two when the dialog changed transport at sipedge). It returns
// the decoded state and how many entries to remove; an entry carrying the
// sipedge parameter with a bad signature is an error.
func (p *Proxy) ourRoute(req *sip.Request) (routeState, int, error) {
	var st routeState
	n := 0
	for _, h := range req.Headers() { // GetHeaders("Route") would allocate its list
		if !strings.EqualFold(h.Name(), "Route") {
			continue
		}
		rh, ok := h.(*sip.RouteHeader)
		if !ok {
			break
		}
		v, ok := rh.Address.UriParams.Get(routeParam)
		if !ok {
			break
		}
		s, key, err := p.signer.decode(v)
		if err != nil {
			return routeState{}, 0, err
		}
		if key > 0 && p.metrics != nil {
			p.metrics.routeOldSecret.Inc()
		}
		st = s
		n++
		if n == 2 {
			break
		}
	}
	return st, n, nil
}

// dropRoutes removes the first n Route entries.
func dropRoutes(req *sip.Request, n int) {
	for i := 0; i < n; i++ {
		req.RemoveHeader("Route")
	}
}

// ownRoutes is sipedge's Record-Route for one forwarded request, top
// first; prepareForward inserts it under sipedge's Via, in the same new
// header list.
type ownRoutes struct {
	h [2]sip.Header
	n int
}

func (r *ownRoutes) list() []sip.Header { return r.h[:r.n] }

// recordRoute is sipedge's Record-Route for the copy of in sent with st.
// When the two sides use different transports or listen addresses it is
// two (RFC 5658 double Record-Route; RFC 3261 §16.6 for several
// interfaces): the lower one names the address in arrived on and faces the
// caller, the top one names the address the copy leaves from and faces the
// node.
func (p *Proxy) recordRoute(in *sip.Request, st routeState) ownRoutes {
	// Over TLS or a WebSocket: that listener (listeners.go onTransport).
	peer := p.onTransport(p.arrivedOn(in), st.PeerTransport)
	node := p.onTransport(p.sendsFromAddr(in, st.NodeAddr), st.NodeTransport)
	r := ownRoutes{n: 1}
	p.signer.encode(st, func(token []byte) {
		r.h[0] = newRecordRoute(node.host, node.port, st.NodeTransport, token) // vias.go
		if st.PeerTransport != st.NodeTransport || peer.host != node.host || peer.port != node.port {
			r.h[1], r.n = newRecordRoute(peer.host, peer.port, st.PeerTransport, token), 2
		}
	})
	return r
}

// loopHash covers the fields that stay the same when a request comes back
// to us unchanged (RFC 3261 §16.6 step 8), FNV-1a without allocation.
// rawLoopHash (ack_raw.go) is the same over an ACK's bytes.
func loopHash(req *sip.Request) uint64 {
	h := fnvOffset
	h.field(req.Recipient.User)
	h.field(req.Recipient.Host)
	h.number(int64(req.Recipient.Port))
	h.field(fromTag(req))
	if to := req.To(); to != nil {
		tag, _ := to.Params.Get("tag")
		h.field(tag)
	}
	h.field(callID(req))
	if cs := req.CSeq(); cs != nil {
		h.number(int64(cs.SeqNo))
	}
	return uint64(h)
}

// fnv1a is the FNV-1a state of loopHash and of the stateless branch.
type fnv1a uint64

const (
	fnvOffset fnv1a = 14695981039346656037
	fnvPrime  fnv1a = 1099511628211
)

func (h *fnv1a) add(s string) {
	for i := 0; i < len(s); i++ {
		*h = (*h ^ fnv1a(s[i])) * fnvPrime
	}
}

// field adds s closed by a 0xff, so that "ab"+"c" and "a"+"bc" differ.
func (h *fnv1a) field(s string) {
	h.add(s)
	*h = (*h ^ 0xff) * fnvPrime
}

// number adds n's decimal digits as a field.
func (h *fnv1a) number(n int64) {
	var num [20]byte
	h.field(unsafeString(strconv.AppendInt(num[:0], n, 10)))
}

// branch appends a new branch for the copy of req sipedge sends (its loop
// hash and six random bytes) to dst; newVia copies it into the Via.
func (p *Proxy) branch(dst []byte, req *sip.Request) []byte {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	out := append(strconv.AppendUint(append(dst, branchMark...), loopHash(req), 16), '.')
	return hex.AppendEncode(out, rnd[:])
}

// statelessBranch is deterministic so a retransmitted ACK keeps its branch.
func statelessBranch(dst []byte, req *sip.Request) []byte {
	b := ""
	if via := req.Via(); via != nil {
		b, _ = via.Params.Get("branch")
	}
	return appendStatelessBranch(dst, loopHash(req), b)
}

// appendStatelessBranch appends the branch of a request whose loop hash is
// loop and whose top Via carries viaBranch: the same request gives the
// same branch.
func appendStatelessBranch(b []byte, loop uint64, viaBranch string) []byte {
	h := fnvOffset
	h.add(viaBranch)
	b = strconv.AppendUint(append(b, branchMark...), loop, 16)
	return strconv.AppendUint(append(b, ".a"...), uint64(h), 16)
}

// isLoop reports whether the request already passed through this proxy
// unchanged: one of its Vias is ours and carries the same loop hash.
// A spiral (the request came back with a new Request-URI) is not a loop.
func (p *Proxy) isLoop(req *sip.Request) bool {
	var want string
	for _, h := range req.Headers() { // GetHeaders("Via") would allocate its list
		via, ok := h.(*sip.ViaHeader)
		if !ok || !p.isOurs(via.Host, via.Port) {
			continue
		}
		b, _ := via.Params.Get("branch")
		if !strings.HasPrefix(b, branchMark) {
			continue
		}
		if want == "" {
			want = branchMark + strconv.FormatUint(loopHash(req), 16) + "."
		}
		if strings.HasPrefix(b, want) {
			return true
		}
	}
	return false
}

// markReceived adds received/rport to the sender's Via (RFC 3261 §18.2.1,
// RFC 3581) so responses find their way back through NAT.
func markReceived(via *sip.ViaHeader, source string) {
	host, port, err := net.SplitHostPort(source)
	if err != nil {
		return
	}
	if via.Params.Has("rport") {
		via.Params = setParam(via.Params, "rport", port)
		via.Params = setParam(via.Params, "received", host)
		return
	}
	if via.Host != host {
		via.Params = setParam(via.Params, "received", host)
	}
}

func setParam(ps sip.HeaderParams, k, v string) sip.HeaderParams {
	for i := range ps {
		if ps[i].K == k {
			ps[i].V = v
			return ps
		}
	}
	return append(ps, sip.HeaderKV{K: k, V: v})
}

func splitHostPort(addr string) (string, int) {
	h, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	port, _ := strconv.Atoi(ps)
	return h, port
}

func transportOrUDP(t string) string {
	if t == "" {
		return "udp"
	}
	return lower(t)
}

func lower(s string) string {
	switch s { // the transports every message names: no allocation
	case "udp", "UDP":
		return "udp"
	case "tcp", "TCP":
		return "tcp"
	case "tls", "TLS":
		return "tls"
	}
	return strings.ToLower(s)
}
func upper(s string) string {
	switch s { // the transports every message names: no allocation
	case "udp", "UDP":
		return "UDP"
	case "tcp", "TCP":
		return "TCP"
	}
	return strings.ToUpper(s)
}
