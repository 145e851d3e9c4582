package proxy

import (
	"strings"
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
	if got := newVia("UDP", "127.0.0.1", 5060, []byte("z9hG4bK-b")).Value(); got != "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-b" {
		t.Errorf("newVia = %q", got)
	}
	// The branch is copied into the Via's own allocation: the caller's
	// buffer is free once newVia returns.
	br := []byte("z9hG4bK-c")
	own := newVia("UDP", "127.0.0.1", 5060, br)
	copy(br, "XXXXXXXXX")
	if b, _ := own.Params.Get("branch"); b != "z9hG4bK-c" {
		t.Errorf("branch %q after the caller's buffer changed, want z9hG4bK-c", b)
	}
	p := benchProxy()
	req := multiInvite(t, "127.0.0.1", "192.0.2.10:5060")
	br = p.branch(make([]byte, 0, branchRoom), req)
	if len(br) > branchRoom {
		t.Errorf("branch %q longer than branchRoom", br)
	}
	var sinkVia *sip.ViaHeader
	if n := testing.AllocsPerRun(100, func() { sinkVia = newVia("UDP", "127.0.0.1", 5060, br) }); n != 1 {
		t.Errorf("newVia with a new branch: %v allocations, want 1", n)
	}
	_ = sinkVia
	v := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "10.0.0.1", Params: sip.HeaderParams{{K: "rport", V: ""}}}
	if n := testing.AllocsPerRun(100, func() { markReceived(copyVia(v), "192.0.2.1:4000") }); n != 1 {
		t.Errorf("copy and markReceived: %v allocations, want 1", n)
	}
	rr := newRecordRoute("127.0.0.1", 5060, "udp", []byte("tok"))
	if got := rr.Value(); got != "<sip:127.0.0.1:5060;transport=udp;lr;"+routeParam+"=tok>" {
		t.Errorf("newRecordRoute = %q", got)
	}
}

// sipedge's Record-Route, rendered once, is what sipgo writes for the
// typed header of the same URI, and costs two allocations (its bytes and
// the header) however often it is sent.
func TestNewRecordRoute_AsSipgoRendersIt(t *testing.T) {
	for _, tc := range []struct {
		host      string
		port      int
		transport string
	}{
		{"127.0.0.1", 5060, "udp"}, {"::1", 5070, "tcp"}, {"fe80::1%lo", 5060, "udp"}, {"[2001:db8::1]", 5061, "tls"},
		{"edge.example.com", 0, "ws"}, {"10.0.0.1", 65535, "udp"},
	} {
		typed := &sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: tc.host, Port: tc.port,
			UriParams: sip.HeaderParams{{K: "transport", V: tc.transport}, {K: "lr"}, {K: routeParam, V: "AbC-d_9"}}}}
		got := newRecordRoute(tc.host, tc.port, tc.transport, []byte("AbC-d_9"))
		if got.String() != typed.String() {
			t.Errorf("newRecordRoute(%q, %d) = %q, sipgo renders %q", tc.host, tc.port, got, typed)
		}
	}
	var sink sip.Header
	if n := testing.AllocsPerRun(100, func() { sink = newRecordRoute("127.0.0.1", 5060, "udp", []byte("tok")) }); n != 2 {
		t.Errorf("newRecordRoute: %v allocations, want 2", n)
	}
	_ = sink
	var b strings.Builder
	b.Grow(256)
	if n := testing.AllocsPerRun(100, func() { b.Reset(); b.Grow(256); sink.StringWrite(&b) }); n != 1 { // the Grow
		t.Errorf("rendering sipedge's Record-Route: %v allocations, want none", n-1)
	}
}
