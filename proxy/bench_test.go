package proxy

import (
	"fmt"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// benchProxy is a Proxy with only what the per-request helpers read.
func benchProxy() *Proxy {
	return &Proxy{signer: newRouteSigner("bench-secret"), advHost: "127.0.0.1", advPort: 5060,
		udpLA: sip.Addr{Port: 5060}}
}

func benchBye(b *testing.B, p *Proxy) string {
	b.Helper()
	token := p.signer.Encode(routeState{NodeAddr: "127.0.0.2:5070", NodeTransport: "udp",
		PeerAddr: "127.0.0.3:40000", PeerTransport: "udp", FromTag: "caller1", ConfID: "conf-42"})
	return fmt.Sprintf("BYE sip:conf-42@127.0.0.2:5070 SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 127.0.0.3:40000;branch=z9hG4bK-bye1;rport\r\n"+
		"Max-Forwards: 70\r\n"+
		"Route: <sip:127.0.0.1:5060;transport=udp;lr;se=%s>\r\n"+
		"From: <sip:alice@example.com>;tag=caller1\r\n"+
		"To: <sip:conf-42@example.com>;tag=node1\r\n"+
		"Call-ID: bench-call-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n", token)
}

// BenchmarkInDialogRouting measures what sipedge adds to an in-dialog
// request on top of sipgo's parsing: verify the signed route, clone, pick
// the hop and rewrite Via/Max-Forwards/Route.
func BenchmarkInDialogRouting(b *testing.B) {
	p := benchProxy()
	req := parseRequest(b, benchBye(b, p))
	req.SetSource("127.0.0.3:40000")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st, n, err := p.ourRoute(req)
		if err != nil || n != 1 {
			b.Fatal(err)
		}
		out := req.Clone()
		dropRoutes(out, n)
		p.prepareForward(req, out, p.nextHop(req, st), p.branch(nil, req), nil)
	}
}

// BenchmarkParseAndRoute adds sipgo's parse of the datagram, the largest
// per-message cost, for comparison within one run.
func BenchmarkParseAndRoute(b *testing.B) {
	p := benchProxy()
	raw := []byte(benchBye(b, p))
	parser := sip.NewParser()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msg, err := parser.ParseSIP(raw)
		if err != nil {
			b.Fatal(err)
		}
		req := msg.(*sip.Request)
		req.SetSource("127.0.0.3:40000")
		st, n, _ := p.ourRoute(req)
		out := req.Clone()
		dropRoutes(out, n)
		p.prepareForward(req, out, p.nextHop(req, st), p.branch(nil, req), nil)
	}
}

func BenchmarkRouteStateDecode(b *testing.B) {
	s := newRouteSigner("bench-secret")
	v := s.Encode(routeState{NodeAddr: "127.0.0.2:5070", NodeTransport: "udp", PeerAddr: "127.0.0.3:40000",
		PeerTransport: "udp", FromTag: "caller1", ConfID: "conf-42"})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := s.Decode(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRouteStateEncode(b *testing.B) {
	s := newRouteSigner("bench-secret")
	st := routeState{NodeName: "cn1", NodeAddr: "127.0.0.2:5070", NodeTransport: "udp", PeerAddr: "127.0.0.3:40000",
		PeerTransport: "udp", FromTag: "caller1", ConfID: "conf-42", Instance: "edge-a"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if s.Encode(st) == "" {
			b.Fatal("empty")
		}
	}
}

// BenchmarkRouteStateDecodeRotation decodes a route of the previous secret
// while three are held (current, next, previous): the cost during a
// rotation, one failed open before the one that succeeds.
func BenchmarkRouteStateDecodeRotation(b *testing.B) {
	v := newRouteSigner("old").Encode(routeState{NodeAddr: "127.0.0.2:5070", NodeTransport: "udp", PeerAddr: "127.0.0.3:40000",
		PeerTransport: "udp", FromTag: "caller1", ConfID: "conf-42"})
	s := newRouteSigner("new", "old", "next")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := s.Decode(v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRouteStateDecodeForged is what a forged route costs sipedge
// with three secrets held: three failed opens.
func BenchmarkRouteStateDecodeForged(b *testing.B) {
	v := newRouteSigner("attacker").Encode(routeState{NodeAddr: "10.0.0.1:5060", FromTag: "x"})
	s := newRouteSigner("new", "old", "next")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := s.Decode(v); err == nil {
			b.Fatal("forged route decoded")
		}
	}
}
