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

// Common headers nobody reads are relayed as they came, under their
// canonical name (as sipgo writes its typed headers), one allocation
// fewer each than sipgo's parser; none of them shadows a parser of sipgo's.
func TestParser_UnreadHeadersRelayedVerbatim(t *testing.T) {
	for _, name := range unreadHeaders {
		if _, ok := sip.DefaultHeadersParser()[strings.ToLower(name)]; ok {
			t.Errorf("%s has a parser of sipgo's", name)
		}
	}
	head := "INVITE sip:conf1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n" +
		"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:conf1@example.com>\r\nCall-ID: u-1\r\nCSeq: 1 INVITE\r\n"
	cases := []struct{ line, want string }{
		{"User-Agent: sipp/3.6 (x; y) , z", "User-Agent: sipp/3.6 (x; y) , z"},
		{"user-agent:   Linphone/5.0  ", "User-Agent: Linphone/5.0"},
		{"Supported: replaces, timer", "Supported: replaces, timer"},
		{"k: 100rel", "k: 100rel"},
		{"Subject: a, b", "Subject: a, b"},
		{"Session-Expires: 1800;refresher=uac", "Session-Expires: 1800;refresher=uac"},
		{"X-Other: kept", "X-Other: kept"},
	}
	for _, tc := range cases {
		msg, err := newParser().ParseSIP([]byte(head + tc.line + "\r\nContent-Length: 0\r\n\r\n"))
		if err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		if s := msg.String(); !strings.Contains(s, "\r\n"+tc.want+"\r\n") {
			t.Errorf("%q rendered without %q:\n%s", tc.line, tc.want, s)
		}
	}
	raw := []byte(head + "User-Agent: sipp\r\nContent-Length: 0\r\n\r\n")
	parse := func(p *sip.Parser) float64 {
		return testing.AllocsPerRun(200, func() {
			if _, err := p.ParseSIP(raw); err != nil {
				t.Fatal(err)
			}
		})
	}
	if ours, sipgos := parse(newParser()), parse(sip.NewParser()); ours > sipgos-1 {
		t.Errorf("parse with User-Agent: %v allocations, sipgo's parser %v; want one fewer at least", ours, sipgos)
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
