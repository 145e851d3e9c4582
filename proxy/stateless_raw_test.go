package proxy

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// rawCase is a request (with "\n" line ends) and whether scanRaw may read
// it from its bytes.
var rawCases = []struct {
	name string
	msg  string
	ok   bool
}{
	{"sipp INVITE", rawINVITE, true},
	{"REGISTER", strings.Replace(strings.Replace(rawINVITE, "INVITE sip:conf1@127.0.0.1:5060", "REGISTER sip:127.0.0.1", 1), "1 INVITE", "1 REGISTER", 1), true},
	{"compact forms", "INVITE sip:conf1@127.0.0.1 SIP/2.0\nv: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport\nf: <sip:a@b>;tag=x\nt: <sip:conf1@b>\ni: cid\nCSeq: 1 INVITE\nl: 0\n\n", true},
	{"two Vias", strings.Replace(rawINVITE, "Max-Forwards", "Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK-x\nMax-Forwards", 1), true},
	{"To tag", strings.Replace(rawINVITE, "To: <sip:conf1@127.0.0.1:5060>", "To: <sip:conf1@127.0.0.1:5060>;tag=t", 1), false},
	{"From without tag", strings.Replace(rawINVITE, ";tag=123J1", "", 1), false},
	{"Route", strings.Replace(rawINVITE, "Max-Forwards", "Route: <sip:127.0.0.1;lr>\nMax-Forwards", 1), false},
	{"X-Sipedge header", strings.Replace(rawINVITE, "Max-Forwards", "x-sipedge-conference: c\nMax-Forwards", 1), false},
	{"Proxy-Require", strings.Replace(rawINVITE, "Max-Forwards", "Proxy-Require: foo\nMax-Forwards", 1), false},
	{"Max-Forwards 0", strings.Replace(rawINVITE, "Max-Forwards: 70", "Max-Forwards: 00", 1), false},
	{"sipedge branch", strings.Replace(rawINVITE, "Max-Forwards", "Via: SIP/2.0/UDP 127.0.0.1:5060;branch="+branchMark+"abc.1\nMax-Forwards", 1), false},
	{"Via list", strings.Replace(rawINVITE, ";branch=z9hG4bK-1", ";branch=z9hG4bK-1, SIP/2.0/UDP 10.0.0.1", 1), false},
	{"folded", strings.Replace(rawINVITE, "Call-ID: ", "Call-ID:\n ", 1), false},
	{"two Call-IDs", strings.Replace(rawINVITE, "Max-Forwards", "i: other\nMax-Forwards", 1), false},
	{"two Content-Types", strings.Replace(rawINVITE, "Max-Forwards", "c: text/plain\nMax-Forwards", 1), false},
	{"CSeq of another method", strings.Replace(rawINVITE, "1 INVITE", "1 invite", 1), false},
	{"SIP/3.0", strings.Replace(rawINVITE, "5060 SIP/2.0", "5060 SIP/3.0", 1), false},
	{"sips", strings.Replace(rawINVITE, "INVITE sip:", "INVITE sips:", 1), false},
	{"URI headers", strings.Replace(rawINVITE, "conf1@127.0.0.1:5060 SIP", "conf1@127.0.0.1:5060?x=y SIP", 1), false},
	{"escaped user", strings.Replace(rawINVITE, "INVITE sip:conf1@", "INVITE sip:conf%31@", 1), false},
	{"IPv6 host", strings.Replace(rawINVITE, "INVITE sip:conf1@127.0.0.1:5060", "INVITE sip:conf1@[::1]:5060", 1), false},
	{"bad port", strings.Replace(rawINVITE, "INVITE sip:conf1@127.0.0.1:5060", "INVITE sip:conf1@127.0.0.1:50x0", 1), false},
	{"no user", strings.Replace(rawINVITE, "INVITE sip:conf1@", "INVITE sip:", 1), true}, // 404 is decided later
	{"tel To", strings.Replace(rawINVITE, "To: <sip:conf1@127.0.0.1:5060>", "To: <tel:+123>", 1), false},
	{"Content-Length short", strings.Replace(rawINVITE, "Content-Length: 0", "Content-Length: 5", 1), false},
	{"no Content-Length", strings.Replace(rawINVITE, "Content-Length: 0\n", "", 1), false},
	{"no CSeq", strings.Replace(rawINVITE, "CSeq: 1 INVITE\n", "", 1), false},
	{"bare LF", "INVITE sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n\n", false},
}

const rawINVITE = `INVITE sip:conf1@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport
From: "caller" <sip:caller@127.0.0.1:5061>;tag=123J1
To: <sip:conf1@127.0.0.1:5060>
Call-ID: 1-123@127.0.0.1
CSeq: 1 INVITE
Contact: <sip:caller@127.0.0.1:5061;transport=UDP>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: 0

`

func crlfd(s string) []byte {
	if strings.HasPrefix(s, "INVITE sip:a@b SIP/2.0\nVia") { // the bare-LF case stays bare
		return []byte(s)
	}
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

func TestScanRaw_ReadsOnlyPlainRequests(t *testing.T) {
	for _, tc := range rawCases {
		t.Run(tc.name, func(t *testing.T) {
			var r rawRequest
			if got := scanRaw(crlfd(tc.msg), &r); got != tc.ok {
				t.Fatalf("scanRaw = %v, want %v", got, tc.ok)
			}
		})
	}
}

// A request read from its bytes gets the answer the sipgo-parsed reading
// gives: both parse back to the same status, Vias (top one with rport and
// received), From, To (but for the tag), Call-ID, CSeq and headers added.
func TestStatelessRaw_AnswerMatchesParsedReading(t *testing.T) {
	p := &Proxy{opts: Options{UserAgent: "sipedge-test"}}
	p.sl.tag = "sl0123456789-"
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5061}
	for _, tc := range rawCases {
		if !tc.ok {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			data := crlfd(tc.msg)
			var r rawRequest
			if !scanRaw(data, &r) {
				t.Fatal("not read")
			}
			contact := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "conf1", Host: "127.0.0.9", Port: 5070}}
			var raw, parsed bytes.Buffer
			p.appendRaw(&raw, &r, src, 302, "Moved Temporarily", 30, contact)
			req := parseRequest(t, string(data))
			req.SetSource(src.String())
			p.appendStateless(&parsed, req, 302, "Moved Temporarily", 30, contact)
			a, b := parseResponse(t, raw.String()), parseResponse(t, parsed.String())
			if a.StatusCode != b.StatusCode || a.Reason != b.Reason {
				t.Errorf("status %d %q, parsed reading %d %q", a.StatusCode, a.Reason, b.StatusCode, b.Reason)
			}
			av, bv := a.GetHeaders("Via"), b.GetHeaders("Via")
			if len(av) != len(bv) {
				t.Fatalf("%d Vias, parsed reading %d\n%s", len(av), len(bv), raw.String())
			}
			for i := range av {
				x, y := av[i].(*sip.ViaHeader), bv[i].(*sip.ViaHeader)
				if x.Host != y.Host || x.Port != y.Port || x.Transport != y.Transport || !sameParams(x.Params, y.Params) {
					t.Errorf("Via %d %q, parsed reading %q", i, x.Value(), y.Value())
				}
			}
			if a.From().Value() != b.From().Value() || a.CallID().Value() != b.CallID().Value() || a.CSeq().Value() != b.CSeq().Value() {
				t.Errorf("From/Call-ID/CSeq %q %q %q, parsed reading %q %q %q", a.From().Value(), a.CallID().Value(), a.CSeq().Value(),
					b.From().Value(), b.CallID().Value(), b.CSeq().Value())
			}
			ta, _ := a.To().Params.Get("tag")
			if !strings.HasPrefix(ta, p.sl.tag) || a.To().Address.String() != b.To().Address.String() {
				t.Errorf("To %q, parsed reading %q", a.To().Value(), b.To().Value())
			}
			for _, h := range []string{"Retry-After", "Contact", "Server", "Content-Length"} {
				x, y := a.GetHeader(h), b.GetHeader(h)
				if x == nil || y == nil || x.Value() != y.Value() {
					t.Errorf("%s %v, parsed reading %v", h, x, y)
				}
			}
		})
	}
}

func sameParams(a, b sip.HeaderParams) bool {
	if len(a) != len(b) {
		return false
	}
	for _, kv := range a {
		if v, ok := b.Get(kv.K); !ok || v != kv.V {
			return false
		}
	}
	return true
}

// BenchmarkScanRaw is the bytes-only reading of sipp's reject INVITE.
func BenchmarkScanRaw(b *testing.B) {
	data := crlfd(rawINVITE)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var r rawRequest
		if !scanRaw(data, &r) {
			b.Fatal("not read")
		}
	}
}
