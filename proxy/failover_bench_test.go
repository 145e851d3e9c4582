package proxy

import (
	"fmt"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/ring"
)

func benchInvite(b *testing.B) *sip.Request {
	b.Helper()
	body := "v=0\r\no=caller 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
	req := parseRequest(b, fmt.Sprintf("INVITE sip:conf-42@127.0.0.1:5060 SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 127.0.0.3:40000;branch=z9hG4bK-inv1;rport\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:alice@example.com>;tag=caller1\r\n"+
		"To: <sip:conf-42@example.com>\r\n"+
		"Call-ID: bench-call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.3:40000>\r\n"+
		"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	req.SetSource("127.0.0.3:40000")
	return req
}

// BenchmarkFailoverPlan is what failover adds to every new INVITE while no
// node fails: one clone of the INVITE as built for its first node, kept to
// build a retry from.
func BenchmarkFailoverPlan(b *testing.B) {
	p := benchProxy()
	p.admit = &failAdmitter{nodes: []ring.Node{{Name: "n1", Addr: "127.0.0.2:5070"}}}
	p.opts.FailoverAttempts = 2
	req := benchInvite(b)
	st := routeState{NodeName: "n1", NodeAddr: "127.0.0.2:5070", NodeTransport: "udp",
		PeerAddr: "127.0.0.3:40000", PeerTransport: "udp", FromTag: "caller1", ConfID: "conf-42"}
	areq := admission.Request{Method: "INVITE", CallID: "bench-call-1", ConfID: "conf-42"}
	out := req.Clone()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !p.planFailover(&failover{}, req, areq, out, st) {
			b.Fatal("no plan")
		}
	}
}
