package proxy

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func parseRequest(t testing.TB, raw string) *sip.Request {
	t.Helper()
	msg, err := newParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		t.Fatalf("not a request")
	}
	return req
}

// msgWith builds a request from a start line and header lines.
func msgWith(start string, headers ...string) string {
	return start + "\r\n" + strings.Join(headers, "\r\n") + "\r\nContent-Length: 0\r\n\r\n"
}

var baseHeaders = []string{
	"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-p1",
	"From: <sip:a@example.com>;tag=f1",
	"To: <sip:conf@example.com>",
	"Call-ID: parse-1",
	"CSeq: 1 INVITE",
	"Max-Forwards: 70",
}

// without returns baseHeaders minus the ones starting with prefix, plus extra.
func without(prefix string, extra ...string) []string {
	var out []string
	for _, h := range baseHeaders {
		if !strings.HasPrefix(h, prefix) {
			out = append(out, h)
		}
	}
	return append(out, extra...)
}

func TestMalformed_ReasonPerMissingPart(t *testing.T) {
	for _, tc := range []struct {
		name, start string
		headers     []string
		want        string
	}{
		{"complete", "INVITE sip:conf@example.com SIP/2.0", baseHeaders, ""},
		{"no From", "INVITE sip:conf@example.com SIP/2.0", without("From:"), "missing From"},
		{"no To", "INVITE sip:conf@example.com SIP/2.0", without("To:"), "missing To"},
		{"no Call-ID", "INVITE sip:conf@example.com SIP/2.0", without("Call-ID:"), "missing Call-ID"},
		{"no CSeq", "INVITE sip:conf@example.com SIP/2.0", without("CSeq:"), "missing CSeq"},
		{"CSeq of another method", "INVITE sip:conf@example.com SIP/2.0", without("CSeq:", "CSeq: 1 BYE"), "CSeq method mismatch"},
		{"CSeq method in another case (RFC 4475 intmeth)", "INVITE sip:conf@example.com SIP/2.0", without("CSeq:", "CSeq: 1 invite"), ""},
		{"ACK may carry the INVITE's CSeq number", "ACK sip:conf@example.com SIP/2.0", without("CSeq:", "CSeq: 1 ACK"), ""},
		{"no From tag", "INVITE sip:conf@example.com SIP/2.0", without("From:", "From: <sip:a@example.com>"), "missing From tag"},
		{"From tag with LWS around = (RFC 4475 wsinv)", "INVITE sip:conf@example.com SIP/2.0", without("From:", "From: <sip:a@example.com> ;tag=x"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := parseRequest(t, msgWith(tc.start, tc.headers...))
			if got := malformed(req); got != tc.want {
				t.Fatalf("malformed = %q; want %q", got, tc.want)
			}
		})
	}
}

func TestFromTagToTagCallID(t *testing.T) {
	for _, tc := range []struct {
		from, to       string
		fromTag, toTag string
		hasTo          bool
	}{
		{"From: <sip:a@x>;tag=abc", "To: <sip:b@x>", "abc", "", false},
		{"From: <sip:a@x>;tag=abc", "To: <sip:b@x>;tag=def", "abc", "def", true},
		{"From: <sip:a@x>", "To: <sip:b@x>", "", "", false},
		// after rawSanity compaction sipgo still may keep a padded key: fromTag trims it
		{"From: <sip:a@x> ; tag=abc", "To: <sip:b@x>", "abc", "", false},
	} {
		req := parseRequest(t, msgWith("OPTIONS sip:b@x SIP/2.0", "Via: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK-1",
			tc.from, tc.to, "Call-ID: id-1", "CSeq: 1 OPTIONS"))
		if got := fromTag(req); got != tc.fromTag {
			t.Errorf("%s: fromTag = %q; want %q", tc.from, got, tc.fromTag)
		}
		if got := hasToTag(req); got != tc.hasTo {
			t.Errorf("%s: hasToTag = %v; want %v", tc.to, got, tc.hasTo)
		}
		if got := callID(req); got != "id-1" {
			t.Errorf("callID = %q", got)
		}
	}
}
