package proxy

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// The Contact a dialog record keeps is read when sipedge sends in the
// dialog: the first entry's URI, whatever the header's form.
func TestContactURI_FirstEntryOfTheHeaderAsItCame(t *testing.T) {
	cases := []struct {
		name, raw string // the Contact line as received
		want      string // the URI, "" for none
	}{
		{"name-addr", "Contact: <sip:alice@192.0.2.1:5070;transport=udp>", "sip:alice@192.0.2.1:5070;transport=udp"},
		{"compact form", "m: <sip:alice@192.0.2.1:5070>", "sip:alice@192.0.2.1:5070"},
		{"display name with a comma", `Contact: "Smith, Alice" <sip:alice@192.0.2.1>;expires=60`, "sip:alice@192.0.2.1"},
		{"two entries", "Contact: <sip:a@192.0.2.1>, <sip:b@192.0.2.2>", "sip:a@192.0.2.1"},
		{"addr-spec", "Contact: sip:alice@[2001:db8::1]:5070", "sip:alice@[2001:db8::1]:5070"},
		{"IPv6 in brackets", "Contact: <sip:node@[::1]:5080;ob>", "sip:node@[::1]:5080;ob"},
		{"none", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			line := ""
			if tc.raw != "" {
				line = tc.raw + "\r\n"
			}
			req := parseRequest(t, "INVITE sip:conf1@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-c\r\n"+
				"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:conf1@example.com>\r\nCall-ID: c-1\r\nCSeq: 1 INVITE\r\n"+
				line+"Content-Length: 0\r\n\r\n")
			h := contactOf(req)
			if tc.raw != "" {
				if _, typed := h.(*sip.ContactHeader); typed || h == nil || !strings.HasSuffix(tc.raw, ": "+h.Value()) {
					t.Errorf("the parser kept %#v, want the generic header as it came", h)
				}
			}
			uri, ok := contactURI(h)
			if got := map[bool]string{true: uri.String(), false: ""}[ok]; got != tc.want {
				t.Errorf("contactURI = %q, want %q", got, tc.want)
			}
			// A typed header (built by sipedge or another parser) reads the same.
			if ok {
				typed := &sip.ContactHeader{Address: uri}
				if u, ok := contactURI(typed); !ok || u.String() != tc.want {
					t.Errorf("typed contactURI = %q, %v", u.String(), ok)
				}
			}
		})
	}
}
