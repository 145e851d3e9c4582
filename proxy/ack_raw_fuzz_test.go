package proxy

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// FuzzScanRawAck: the raw ACK path reads every UDP ACK an instance with
// anchoring off receives. It never panics, and whatever it accepts, sipgo
// parses as an ACK that says the same (Call-ID, From and To tags, CSeq
// number, top Via branch and host, the loop hash's fields, the sipedge
// Route tokens), and the ACK it writes
// parses too, with sipedge's Via on top, Max-Forwards one less and the
// sipedge Route entries gone.
func FuzzScanRawAck(f *testing.F) {
	route := "Route: <sip:127.0.0.1:5060;transport=udp;lr;se=AAAA>\r\n"
	f.Add([]byte(ackWithRoute(route)))
	f.Add([]byte(ackWithRoute(route + route + "Route: <sip:10.9.9.9;lr>\r\n")))
	f.Add([]byte(strings.Replace(ackWithRoute(route), ";rport", "", 1)))
	for _, dir := range []string{"testdata/rfc4475", "testdata/rfc5118"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	px := &Proxy{advHost: "127.0.0.1", advPort: 5060}
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 5061}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a rawAck
		if !scanRawAck(data, &a) {
			return
		}
		msg, err := newParser().ParseSIP(bytes.Clone(data))
		if err != nil {
			t.Fatalf("scanRawAck read an ACK sipgo cannot parse (%v):\n%q", err, data)
		}
		req, ok := msg.(*sip.Request)
		if !ok || req.Method != sip.ACK {
			t.Fatalf("scanRawAck read a non-ACK:\n%q", data)
		}
		if callID(req) != string(a.callID) || fromTag(req) != string(a.fromTag) || toTag(req) != string(a.toTag) {
			t.Fatalf("Call-ID/tags %q %q %q, sipgo %q %q %q:\n%q", a.callID, a.fromTag, a.toTag,
				callID(req), fromTag(req), toTag(req), data)
		}
		if cs := req.CSeq(); cs == nil || cs.SeqNo != a.cseq {
			t.Fatalf("CSeq %d, sipgo %v:\n%q", a.cseq, cs, data)
		}
		if b, _ := req.Via().Params.Get("branch"); b != string(a.branch) {
			t.Fatalf("branch %q, sipgo %q:\n%q", a.branch, b, data)
		}
		if rawLoopHash(&a) != loopHash(req) {
			t.Fatalf("loop hash differs from sipgo's reading (Request-URI %q %q %d):\n%q", a.ruriUser, a.ruriHost, a.ruriPort, data)
		}
		if req.Via().Host != string(a.viaHost) {
			t.Fatalf("top Via host %q, sipgo %q:\n%q", a.viaHost, req.Via().Host, data)
		}
		n := 0
		for _, h := range req.GetHeaders("Route") {
			rh, ok := h.(*sip.RouteHeader)
			if !ok {
				break
			}
			v, ok := rh.Address.UriParams.Get(routeParam)
			if !ok || n == 2 {
				break
			}
			if n >= a.nroutes || v != string(a.tokens[n]) {
				t.Fatalf("route %d token %q, raw read %d of them:\n%q", n, v, a.nroutes, data)
			}
			n++
		}
		if n != a.nroutes {
			t.Fatalf("sipgo reads %d sipedge routes, raw %d:\n%q", n, a.nroutes, data)
		}
		var buf bytes.Buffer
		px.appendRawAck(&buf, &a, src)
		out, err := newParser().ParseSIP(buf.Bytes())
		if err != nil {
			t.Fatalf("forwarded ACK does not parse (%v):\n%q", err, buf.Bytes())
		}
		fwd := out.(*sip.Request)
		if via := fwd.Via(); via == nil || via.Host != "127.0.0.1" || via.Port != 5060 {
			t.Fatalf("forwarded ACK's top Via %v:\n%q", via, buf.Bytes())
		}
		if mf := fwd.MaxForwards(); mf == nil || int(mf.Val()) != a.mf-1 {
			t.Fatalf("forwarded Max-Forwards %v, want %d", mf, a.mf-1)
		}
		if len(fwd.GetHeaders("Route")) != len(req.GetHeaders("Route"))-a.nroutes {
			t.Fatalf("forwarded ACK keeps %d Routes of %d, %d removed:\n%q", len(fwd.GetHeaders("Route")),
				len(req.GetHeaders("Route")), a.nroutes, buf.Bytes())
		}
	})
}
