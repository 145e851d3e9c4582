package proxy

import (
	"net"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// tryingFor is the 100 Trying the proxy sends for a new INVITE at once
// (RFC 3261 §16.2), as sip.NewResponseFromRequest builds it (the
// request's Vias, the top one with rport and received filled in when it
// asks, RFC 3581; From, To without a tag, Call-ID, CSeq, Timestamp) but
// with the request's own header values instead of deep copies: about ten
// allocations fewer per call. Only the top Via, which gets parameters,
// is copied; the rest are never changed after parsing (see forwardCopy),
// and the 100 lives no longer than the request's server transaction.
func tryingFor(req *sip.Request) *sip.Response {
	res := sip.NewResponse(100, "Trying")
	res.SipVersion = req.SipVersion
	top := true
	for _, h := range req.Headers() {
		via, ok := h.(*sip.ViaHeader)
		if !ok {
			continue
		}
		if top {
			top = false
			via = copyVia(via) // vias.go
			answerRport(via, req.Source())
		}
		res.AppendHeader(via)
	}
	if h := req.From(); h != nil {
		res.AppendHeader(h)
	}
	if h := req.To(); h != nil {
		res.AppendHeader(h)
	}
	if h := req.CallID(); h != nil {
		res.AppendHeader(h)
	}
	if h := req.CSeq(); h != nil {
		res.AppendHeader(h)
	}
	for _, h := range req.Headers() {
		if strings.EqualFold(h.Name(), "Timestamp") {
			res.AppendHeader(h)
		}
	}
	res.SetBody(nil)
	res.SetTransport(req.Transport())
	res.SetDestination(req.Source())
	return res
}

// answerRport fills in the top Via of an answer as sipgo's
// NewResponseFromRequest does when the request asks for it (an empty
// rport, RFC 3581): rport the source's port, received its host.
func answerRport(via *sip.ViaHeader, source string) {
	if val, ok := via.Params.Get("rport"); ok && val == "" {
		host, port, _ := net.SplitHostPort(source)
		via.Params.Add("rport", port)
		via.Params.Add("received", host)
	}
}
