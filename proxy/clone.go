package proxy

import "github.com/emiago/sipgo/sip"

// forwardCopy is the request the proxy sends on for in, without sipgo's
// deep Clone (about twenty allocations for an INVITE, and a second copy of
// every header held by the client transaction for its 32 s): a new message
// whose header list holds in's own header values, which nobody changes
// after parsing, except the two the proxy changes in place, which are
// copied: the top Via (markReceived) and Max-Forwards (prepareForward
// decrements it). Everything else the proxy does to the copy edits its
// list only (Route and X-Sipedge-* removed, Via and Record-Route
// prepended, Content-Length replaced by SetBody), so in stays as it came:
// sipgo builds the server transaction's responses (487, 408) from it.
//
// It copies in's start line, header list, body, source and local address.
func forwardCopy(in *sip.Request) *sip.Request {
	out := sip.NewRequest(in.Method, sip.Uri{})
	out.Recipient = in.Recipient // its parameter lists shared too: only Host and Port are ever set on the copy
	out.SipVersion = in.SipVersion
	topVia := true
	for _, h := range in.Headers() {
		switch v := h.(type) {
		case *sip.ViaHeader:
			if topVia {
				h, topVia = copyVia(v), false // vias.go
			}
		case *sip.MaxForwardsHeader:
			mf := *v
			h = &mf
		}
		out.AppendHeader(h)
	}
	out.SetBody(in.Body())
	out.SetTransport(in.Transport())
	out.SetSource(in.Source())
	out.Laddr = in.Laddr // the destination is the hop's: prepareForward sets it
	return out
}

// serverHeader is the Server header of the proxy's own answers: one value
// for all of them (a header is only ever read once it is in a message).
func (p *Proxy) serverHeader() sip.Header {
	p.serverOnce.Do(func() { p.server = sip.NewHeader("Server", p.opts.UserAgent) })
	return p.server
}
