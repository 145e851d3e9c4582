package proxy

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// A node's 2xx as the proxy relays it: its Record-Route entries (sipedge's
// own among them) are not read, so they stay generic and are written as
// they came; every header sipgo or sipedge reads stays typed.
func TestParser_RecordRouteRelayedVerbatim(t *testing.T) {
	const rr1 = "<sip:127.0.0.1:5060;transport=udp;lr;se=AbC-d_9>"
	cases := []struct {
		name, lines string
		want        []string // Record-Route values, in order
	}{
		{"one entry", "Record-Route: " + rr1 + "\r\n", []string{rr1}},
		{"two lines", "Record-Route: <sip:[::1]:5070;lr>\r\nRecord-Route: " + rr1 + "\r\n", []string{"<sip:[::1]:5070;lr>", rr1}},
		{"comma list in one line", "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n",
			[]string{"<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"}},
		{"header parameters kept", "Record-Route: <sip:p1.example.com;lr>;x=1\r\n", []string{"<sip:p1.example.com;lr>;x=1"}},
		{"lower-case name", "record-route: " + rr1 + "\r\n", []string{rr1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport=5070\r\n" + tc.lines +
				"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:conf1@example.com>;tag=b\r\nCall-ID: p-1\r\n" +
				"CSeq: 1 INVITE\r\nContact: <sip:node@127.0.0.2:5080>\r\nContent-Length: 0\r\n\r\n"
			msg, err := newParser().ParseSIP([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			res := msg.(*sip.Response)
			var got []string
			for _, h := range res.GetHeaders("Record-Route") {
				got = append(got, h.Value())
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("Record-Route values %q, want %q", got, tc.want)
			}
			if res.Via() == nil || res.From() == nil || res.To() == nil || res.CallID() == nil || res.CSeq() == nil ||
				res.Contact() == nil || res.ContentLength() == nil {
				t.Errorf("a typed header is missing:\n%s", res)
			}
			if tag, _ := res.To().Params.Get("tag"); tag != "b" {
				t.Errorf("To tag %q", tag)
			}
			for _, want := range tc.want {
				if !strings.Contains(res.String(), "Record-Route: "+want+"\r\n") {
					t.Errorf("rendered without %q:\n%s", want, res)
				}
			}
		})
	}
}

// The relayed 2xx costs fewer allocations to parse and render than with
// sipgo's default parser (which parses and re-renders each Record-Route
// URI, and the Contact's): measured 33 against 42 for this message.
func TestParser_RelayedAnswerAllocations(t *testing.T) {
	raw := []byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport=5070\r\n" +
		"Record-Route: <sip:127.0.0.1:5060;transport=udp;lr;se=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789>\r\n" +
		"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:conf1@example.com>;tag=b\r\nCall-ID: p-1\r\n" +
		"CSeq: 1 INVITE\r\nContact: <sip:node@127.0.0.2:5080>\r\nContent-Length: 0\r\n\r\n")
	var buf strings.Builder
	buf.Grow(2048)
	run := func(p *sip.Parser) float64 {
		return testing.AllocsPerRun(200, func() {
			msg, err := p.ParseSIP(raw)
			if err != nil {
				t.Fatal(err)
			}
			buf.Reset()
			buf.Grow(2048)
			msg.StringWrite(&buf)
		})
	}
	ours, sipgos := run(newParser()), run(sip.NewParser())
	t.Logf("parse and render: %v allocations, sipgo's default parser %v", ours, sipgos)
	if ours > 34 || ours > sipgos-7 {
		t.Errorf("parse and render: %v allocations, want at most 34 and 7 fewer than sipgo's default parser (%v)", ours, sipgos)
	}
}
