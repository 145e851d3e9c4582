package proxy

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

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

// branchRoom holds every branch sipedge makes (branch: 38 bytes at most,
// statelessBranch: 43).
const branchRoom = 48

// ownVia is sipedge's Via with its branch's bytes in the same allocation.
type ownVia struct {
	viaWithParams
	branch [branchRoom]byte
}

// newVia is sipedge's own Via (one branch parameter, copied: branch may
// be in the caller's buffer).
func newVia(transport, host string, port int, branch []byte) *sip.ViaHeader {
	v := &ownVia{viaWithParams: viaWithParams{h: sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0",
		Transport: transport, Host: host, Port: port}}}
	var b string
	if len(branch) <= branchRoom {
		b = unsafeString(v.branch[:copy(v.branch[:], branch)]) // never written again
	} else {
		b = string(branch) // longer than sipedge's own (a test's): a string of its own
	}
	v.kv[0] = sip.HeaderKV{K: "branch", V: b}
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

// newRecordRoute is sipedge's Record-Route:
// <sip:host:port;transport=…;lr;se=token>, rendered once as sipgo renders
// a *sip.RecordRouteHeader of that URI, and carried as a generic header.
// Nothing reads it back as a typed value (in-dialog requests bring it as
// Route, parsed then), and sipgo would otherwise render the URI again for
// every send and retransmission: its host through net.ParseIP, its port
// through strconv.Itoa and its parameters through a strings.Builder, four
// to five allocations each time.
func newRecordRoute(host string, port int, transport string, token []byte) sip.Header {
	n := len("<sip:[]:65535;transport=;lr;=>") + len(host) + len(transport) + len(routeParam) + len(token)
	b := make([]byte, 0, n)
	b = append(b, "<sip:"...)
	if isIPv6Literal(host) {
		b = append(append(append(b, '['), host...), ']')
	} else {
		b = append(b, host...)
	}
	if port > 0 {
		b = strconv.AppendInt(append(b, ':'), int64(port), 10)
	}
	b = append(b, ";transport="...)
	b = append(b, transport...)
	b = append(b, ";lr;"...)
	b = append(b, routeParam...)
	b = append(b, '=')
	b = append(b, token...)
	b = append(b, '>')
	return sip.NewHeader("Record-Route", unsafeString(b)) // b is never written again
}

// isIPv6Literal reports whether host is an IPv6 address not yet in
// brackets, which a URI writes in brackets. sipgo's uriIP brackets the
// same hosts except a v4-mapped one (::ffff:a.b.c.d), which it leaves bare
// and unparsable; sipedge brackets that too.
func isIPv6Literal(host string) bool {
	return strings.IndexByte(host, ':') >= 0 && net.ParseIP(host) != nil
}
