package proxy

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

// wireBenchInvite is a typical INVITE with a small SDP offer, as a caller
// sends it.
const wireBenchInvite = "INVITE sip:conf-42@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.3:40000;branch=z9hG4bK-inv1;rport\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: \"Alice\" <sip:alice@example.com>;tag=caller1\r\n" +
	"To: <sip:conf-42@example.com>\r\n" +
	"Call-ID: bench-call-1\r\nCSeq: 1 INVITE\r\n" +
	"Contact: <sip:alice@127.0.0.3:40000>\r\n" +
	"Content-Type: application/sdp\r\nContent-Length: 138\r\n\r\n" +
	"v=0\r\no=alice 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n" +
	"m=audio 49170 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"

// BenchmarkSanity: the checks on a parsed request (onRequest's hook).
func BenchmarkSanity(b *testing.B) {
	req := parseRequest(b, wireBenchInvite)
	b.ReportAllocs()
	for b.Loop() {
		if code, _, _ := sanity(req); code != 0 {
			b.Fatal(code)
		}
	}
}

// BenchmarkRawSanity: the byte-level checks every datagram and TCP
// message gets before sipgo parses it.
func BenchmarkRawSanity(b *testing.B) {
	raw := []byte(wireBenchInvite)
	b.ReportAllocs()
	for b.Loop() {
		if n, why := rawSanity(raw); why != "" || n != len(raw) {
			b.Fatal(why)
		}
	}
}

// BenchmarkFrame: finding one message's end in a TCP stream.
func BenchmarkFrame(b *testing.B) {
	raw := []byte(wireBenchInvite + wireBenchInvite)
	b.ReportAllocs()
	for b.Loop() {
		if n, st, _ := frame(raw, DefaultMaxMessage); st != frameOK || n != len(wireBenchInvite) {
			b.Fatal(st)
		}
	}
}

// BenchmarkParseInvite: sipgo's parse of the same message, for scale.
func BenchmarkParseInvite(b *testing.B) {
	raw := []byte(wireBenchInvite)
	p := sip.NewParser()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.ParseSIP(raw); err != nil {
			b.Fatal(err)
		}
	}
}
