package proxy

import "github.com/emiago/sipgo/sip"

// A Via and its parameters in one allocation: the proxy builds or copies
// one or two for every message it forwards.

// viaRoom is how many parameters a Via copy holds without growing: a
// caller's Via usually has two or three (branch, rport), and markReceived
// adds received and rport.
const viaRoom = 4

type viaWithParams struct {
	h  sip.ViaHeader
	kv [viaRoom]sip.HeaderKV
}

// newVia is sipedge's own Via (one branch parameter).
func newVia(transport, host string, port int, branch string) *sip.ViaHeader {
	v := &viaWithParams{h: sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport,
		Host: host, Port: port}}
	v.kv[0] = sip.HeaderKV{K: "branch", V: branch}
	v.h.Params = v.kv[:1:viaRoom]
	return &v.h
}

// copyVia is v.Clone() with room for markReceived's two parameters.
func copyVia(v *sip.ViaHeader) *sip.ViaHeader {
	c := &viaWithParams{h: *v}
	c.h.Params = nil
	switch {
	case len(v.Params)+2 <= viaRoom:
		c.h.Params = append(c.kv[:0:viaRoom], v.Params...)
	case v.Params != nil:
		c.h.Params = append(make(sip.HeaderParams, 0, len(v.Params)+2), v.Params...)
	}
	return &c.h
}

type recordRouteWithParams struct {
	h  sip.RecordRouteHeader
	kv [3]sip.HeaderKV
}

// newRecordRoute is sipedge's Record-Route: <sip:host:port;transport=…;lr;se=token>.
func newRecordRoute(host string, port int, transport, token string) *sip.RecordRouteHeader {
	r := &recordRouteWithParams{h: sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: port}}}
	r.kv = [3]sip.HeaderKV{{K: "transport", V: transport}, {K: "lr", V: ""}, {K: routeParam, V: token}}
	r.h.Address.UriParams = r.kv[:]
	return &r.h
}
