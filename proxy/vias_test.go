package proxy

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

// copyVia is Via.Clone with room to grow: the same header, independent of
// the original, whatever the number of parameters.
func TestCopyVia_IsACloneWithRoom(t *testing.T) {
	for _, params := range []sip.HeaderParams{
		nil,
		{{K: "branch", V: "z9hG4bK-1"}},
		{{K: "branch", V: "z9hG4bK-1"}, {K: "rport", V: ""}},
		{{K: "branch", V: "z9hG4bK-1"}, {K: "rport", V: ""}, {K: "a", V: "1"}, {K: "b", V: "2"}, {K: "c", V: "3"}},
	} {
		v := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "10.0.0.1", Port: 5070, Params: params}
		orig := v.String()
		c := copyVia(v)
		if c.String() != v.Clone().String() {
			t.Errorf("copy %q, clone %q", c, v.Clone())
		}
		markReceived(c, "192.0.2.1:4000")
		c.Params = setParam(c.Params, "x", "y")
		if v.String() != orig {
			t.Errorf("original changed through its copy: %q, was %q", v, orig)
		}
	}
	if got := newVia("UDP", "127.0.0.1", 5060, "z9hG4bK-b").Value(); got != "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-b" {
		t.Errorf("newVia = %q", got)
	}
	v := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "10.0.0.1", Params: sip.HeaderParams{{K: "rport", V: ""}}}
	if n := testing.AllocsPerRun(100, func() { markReceived(copyVia(v), "192.0.2.1:4000") }); n != 1 {
		t.Errorf("copy and markReceived: %v allocations, want 1", n)
	}
	rr := newRecordRoute("127.0.0.1", 5060, "udp", "tok")
	if got := rr.Value(); got != "<sip:127.0.0.1:5060;transport=udp;lr;"+routeParam+"=tok>" {
		t.Errorf("newRecordRoute = %q", got)
	}
}
