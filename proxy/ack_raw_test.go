package proxy

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipedge/sipedge/media"
)

// rawACKTemplate is a caller's ACK of a 2xx, as sipp sends it; ROUTE is
// replaced by the Route lines of a case.
const rawACKTemplate = "ACK sip:conf1@127.0.0.1:5070;transport=UDP SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-7-ack;rport\r\n" +
	"ROUTE" +
	"From: \"caller\" <sip:caller@127.0.0.1:5061>;tag=123J1\r\n" +
	"To: <sip:conf1@127.0.0.1:5060>;tag=node-1\r\n" +
	"Call-ID: 7-123@127.0.0.1\r\n" +
	"CSeq: 1 ACK\r\n" +
	"Contact: <sip:caller@127.0.0.1:5061;transport=UDP>\r\n" +
	"Max-Forwards: 70\r\n" +
	"Subject: Performance Test\r\n" +
	"Content-Length: 0\r\n\r\n"

func ackWithRoute(route string) string { return strings.Replace(rawACKTemplate, "ROUTE", route, 1) }

// rawACKRig is a proxy (anchoring off, one listen address) and the route
// of a dialog it set up, from caller 127.0.0.1:5061 to node 127.0.0.1:5070.
func rawACKRig(t *testing.T) (*Proxy, string) {
	t.Helper()
	r := newCallRig(t, false)
	st := routeState{NodeName: "n1", NodeAddr: "127.0.0.1:5070", NodeTransport: "udp", PeerAddr: "127.0.0.1:5061",
		PeerTransport: "udp", FromTag: "123J1", ConfID: "conf1", Instance: "edge-a"}
	route := "Route: <sip:" + r.px.Addr() + ";transport=udp;lr;" + routeParam + "=" + r.px.signer.Encode(st) + ">\r\n"
	return r.px, route
}

// TestForwardRawACK_SameMessageAsTheParsedPath: what the raw ACK path
// sends reads, header by header, as what forwardAck builds from the
// parsed ACK (Request-URI, Vias with sipedge's branch and received/rport,
// Route entries, Max-Forwards, the rest in order), to the same next hop.
func TestForwardRawACK_SameMessageAsTheParsedPath(t *testing.T) {
	px, route := rawACKRig(t)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5061}
	cases := []struct{ name, msg string }{
		{"sipp ACK", ackWithRoute(route)},
		{"no rport, other host", strings.Replace(ackWithRoute(route), "127.0.0.1:5061;branch=z9hG4bK-7-ack;rport", "10.1.1.1:5061;branch=z9hG4bK-7-ack", 1)},
		{"no rport, same host", strings.Replace(ackWithRoute(route), ";rport", "", 1)},
		{"rport in the middle", strings.Replace(ackWithRoute(route), ";branch=z9hG4bK-7-ack;rport", ";rport;branch=z9hG4bK-7-ack", 1)},
		{"two sipedge routes and one more", ackWithRoute(route + route + "Route: <sip:10.9.9.9;lr>\r\n")},
		{"two Vias", strings.Replace(ackWithRoute(route), "From:", "Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK-x\r\nFrom:", 1)},
		{"no Content-Length", strings.Replace(ackWithRoute(route), "Content-Length: 0\r\n", "", 1)},
		{"Request-URI without port", strings.Replace(ackWithRoute(route), "sip:conf1@127.0.0.1:5070;transport=UDP", "sip:conf1@127.0.0.1", 1)},
		{"from the node", strings.Replace(ackWithRoute(route), "tag=123J1", "tag=other", 1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.msg)
			var a rawAck
			if !scanRawAck(data, &a) {
				t.Fatalf("scanRawAck declined:\n%s", tc.msg)
			}
			var buf bytes.Buffer
			px.appendRawAck(&buf, &a, src)
			raw := parseReq(t, buf.Bytes())

			in := parseReq(t, data)
			in.SetSource(src.String())
			in.SetTransport("UDP")
			st, n, err := px.ourRoute(in)
			if err != nil || n == 0 {
				t.Fatalf("ourRoute: %d, %v", n, err)
			}
			out := forwardCopy(in)
			dropRoutes(out, n)
			px.prepareForward(in, out, px.nextHop(in, st), statelessBranch(nil, in), nil)
			want := parseReq(t, []byte(out.String()))

			if raw.Recipient.String() != want.Recipient.String() {
				t.Errorf("Request-URI %s, want %s", raw.Recipient.String(), want.Recipient.String())
			}
			got, exp := raw.Headers(), want.Headers()
			if len(got) != len(exp) {
				t.Fatalf("%d headers, want %d:\n%s\nwant:\n%s", len(got), len(exp), raw, want)
			}
			for i := range got {
				if got[i].Name() != exp[i].Name() || got[i].Value() != exp[i].Value() {
					t.Errorf("header %d: %s: %s, want %s: %s", i, got[i].Name(), got[i].Value(), exp[i].Name(), exp[i].Value())
				}
			}
		})
	}
}

func parseReq(t *testing.T, b []byte) *sip.Request {
	t.Helper()
	msg, err := newParser().ParseSIP(bytes.Clone(b))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, b)
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		t.Fatalf("not a request:\n%s", b)
	}
	return req
}

// TestScanRawAck_DeclinesWhatTheParsedPathMustJudge: only plain ACKs
// with a sipedge route at the top and no body take the raw path.
func TestScanRawAck_DeclinesWhatTheParsedPathMustJudge(t *testing.T) {
	route := "Route: <sip:127.0.0.1:5060;transport=udp;lr;se=AAAA>\r\n"
	ack := ackWithRoute(route)
	cases := []struct {
		name string
		msg  string
		ok   bool
	}{
		{"sipp ACK", ack, true},
		{"no Route (placement routing)", ackWithRoute(""), false},
		{"foreign Route first", ackWithRoute("Route: <sip:10.9.9.9;lr>\r\n" + route), false},
		{"Route list", ackWithRoute("Route: <sip:127.0.0.1:5060;lr;se=AAAA>, <sip:10.9.9.9;lr>\r\n"), false},
		{"Route without brackets", ackWithRoute("Route: sip:127.0.0.1:5060;lr;se=AAAA\r\n"), false},
		{"unparsable Route below sipedge's", ackWithRoute(route + "Route: 0\r\n"), false},
		{"empty se", ackWithRoute("Route: <sip:127.0.0.1:5060;lr;se=>\r\n"), false},
		{"empty URI parameter", ackWithRoute("Route: <sip:127.0.0.1:5060;;lr;se=AAAA>\r\n"), false},
		{"blank in the Via parameters", strings.Replace(ack, ";branch=z9hG4bK-7-ack", ";branch= z9hG4bK-7-ack", 1), false},
		{"unusual Contact", strings.Replace(ack, "Contact: <sip:caller@127.0.0.1:5061;transport=UDP>", "Contact: <sip:a@b>>", 1), false},
		{"se as a header parameter", ackWithRoute("Route: <sip:127.0.0.1:5060;lr>;se=AAAA\r\n"), false},
		{"body", strings.Replace(ack, "Content-Length: 0\r\n\r\n", "Content-Type: application/sdp\r\nContent-Length: 3\r\n\r\nv=0", 1), false},
		{"Content-Length without a body", strings.Replace(ack, "Content-Length: 0", "Content-Length: 3", 1), false},
		{"compact header", strings.Replace(ack, "Call-ID:", "i:", 1), false},
		{"X-Sipedge header", strings.Replace(ack, "Subject:", "X-Sipedge-Conference: c\r\nSubject:", 1), false},
		{"two Call-IDs", strings.Replace(ack, "Subject:", "Call-ID: x\r\nSubject:", 1), false},
		{"folded", strings.Replace(ack, "Subject: ", "Subject:\r\n ", 1), false},
		{"bare LF", strings.Replace(ack, "Subject: Performance Test\r\n", "Subject: a\nb\r\n", 1), false},
		{"no To tag", strings.Replace(ack, ";tag=node-1", "", 1), false},
		{"Tag= in From", strings.Replace(ack, ";tag=123J1", ";Tag=123J1", 1), false},
		{"no Max-Forwards", strings.Replace(ack, "Max-Forwards: 70\r\n", "", 1), false},
		{"Max-Forwards 0", strings.Replace(ack, "Max-Forwards: 70", "Max-Forwards: 0", 1), false},
		{"CSeq of INVITE", strings.Replace(ack, "1 ACK", "1 INVITE", 1), false},
		{"received already", strings.Replace(ack, ";rport", ";rport;received=10.0.0.1", 1), false},
		{"rport with a value", strings.Replace(ack, ";rport", ";rport=5061", 1), false},
		{"Via list", strings.Replace(ack, ";rport\r\n", ";rport, SIP/2.0/UDP 10.0.0.1\r\n", 1), false},
		{"IPv6 Request-URI", strings.Replace(ack, "127.0.0.1:5070;transport=UDP", "[::1]:5070", 1), false},
		{"sips", strings.Replace(ack, "ACK sip:", "ACK sips:", 1), false},
		{"INVITE", strings.Replace(strings.Replace(ack, "ACK sip:", "INVITE sip:", 1), "1 ACK", "1 INVITE", 1), false},
		{"SIP/3.0", strings.Replace(ack, "UDP SIP/2.0", "UDP SIP/3.0", 1), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var a rawAck
			if got := scanRawAck([]byte(tc.msg), &a); got != tc.ok {
				t.Fatalf("scanRawAck = %v, want %v:\n%s", got, tc.ok, tc.msg)
			}
		})
	}
}

// TestForwardRawACK_TakesOnlyWhatNeedsNoTransaction: the filter forwards
// a plain ACK of a 2xx (counted as an ACK and as a raw one) and leaves to
// sipgo the ACK of a non-2xx answer (its INVITE's transaction key was
// seen), a forged token, TCP, and everything with anchoring on.
func TestForwardRawACK_TakesOnlyWhatNeedsNoTransaction(t *testing.T) {
	px, route := rawACKRig(t)
	node, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5070})
	if err != nil {
		t.Skipf("node port: %v", err)
	}
	defer node.Close()
	udp := sip.TransportReadProps{Transport: "UDP", LocalAddr: px.udpw.PacketConn.LocalAddr(), RemoteAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5061}}
	ack := []byte(ackWithRoute(route))
	before := testutil.ToFloat64(px.metrics.requests[sip.ACK])

	if !px.forwardRawACK(udp, ack) {
		t.Fatal("plain ACK of a 2xx not forwarded")
	}
	buf := make([]byte, 4096)
	_ = node.SetReadDeadline(time.Now().Add(2e9))
	n, _, err := node.ReadFromUDP(buf)
	if err != nil || !bytes.HasPrefix(buf[:n], []byte("ACK sip:conf1@127.0.0.1:5070")) || bytes.Contains(buf[:n], []byte("se=")) {
		t.Fatalf("node got %q, %v", buf[:n], err)
	}
	if got := testutil.ToFloat64(px.metrics.requests[sip.ACK]) - before; got != 1 {
		t.Errorf("ACK requests counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(px.metrics.rawACKs); got != 1 {
		t.Errorf("raw ACKs counted %v, want 1", got)
	}

	tcp := udp
	tcp.Transport = "TCP"
	if px.forwardRawACK(tcp, ack) {
		t.Error("ACK over TCP forwarded raw")
	}
	forged := bytes.Replace(ack, []byte(";se="), []byte(";se=AAAA"), 1)
	if px.forwardRawACK(udp, forged) {
		t.Error("ACK with a forged token forwarded raw")
	}
	// The ACK of a non-2xx answer has its INVITE's branch and CSeq number.
	invite := parseReq(t, bytes.Replace(bytes.Replace(ack, []byte("ACK sip:"), []byte("INVITE sip:"), 1), []byte("1 ACK"), []byte("1 INVITE"), 1))
	px.seq.stamp(invite)
	if px.forwardRawACK(udp, ack) {
		t.Error("ACK whose INVITE transaction was seen (a non-2xx answer's) forwarded raw")
	}
	px.seq.sweepOnce(time.Now().Add(time.Hour))
	px.media = noMedia{}
	if px.forwardRawACK(udp, ack) {
		t.Error("ACK forwarded raw with anchoring on")
	}
}

// noMedia is a Media that does nothing: anchoring on, as far as the raw
// ACK path can tell.
type noMedia struct{}

func (noMedia) Open(string, string, bool)                      {}
func (noMedia) SDP(_ string, _ bool, b []byte) ([]byte, error) { return b, nil }
func (noMedia) Joined(context.Context, media.Join)             {}
func (noMedia) Ended(string)                                   {}
