package proxy

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestTryingFor_AsSipgoBuildsIt: the proxy's 100 Trying is byte for byte
// what sip.NewResponseFromRequest writes, and the request is unchanged.
func TestTryingFor_AsSipgoBuildsIt(t *testing.T) {
	invite := strings.ReplaceAll(rawINVITE, "\n", "\r\n")
	cases := []struct{ name, msg string }{
		{"sipp INVITE (rport)", invite},
		{"no rport", strings.Replace(invite, ";rport", "", 1)},
		{"two Vias", strings.Replace(invite, "Max-Forwards", "Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK-x;rport\r\nMax-Forwards", 1)},
		{"many Via parameters", strings.Replace(invite, ";rport", ";rport;a=1;b=2;c=3;d", 1)},
		{"Timestamp", strings.Replace(invite, "Max-Forwards", "Timestamp: 54\r\nMax-Forwards", 1)},
		{"Record-Route", strings.Replace(invite, "Max-Forwards", "Record-Route: <sip:10.0.0.9;lr>\r\nMax-Forwards", 1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := parseReq(t, []byte(tc.msg))
			req.SetSource("127.0.0.1:5061")
			req.SetTransport("UDP")
			before := req.String()
			want := sip.NewResponseFromRequest(parseWith(t, tc.msg), 100, "Trying", nil)
			got := tryingFor(req)
			if got.String() != want.String() {
				t.Errorf("100 Trying:\n%s\nwant:\n%s", got, want)
			}
			if got.Destination() != want.Destination() || got.Transport() != want.Transport() {
				t.Errorf("to %s over %s, want %s over %s", got.Destination(), got.Transport(), want.Destination(), want.Transport())
			}
			if req.String() != before {
				t.Errorf("request changed:\n%s\nwas:\n%s", req, before)
			}
		})
	}
}

func parseWith(t *testing.T, msg string) *sip.Request {
	req := parseReq(t, []byte(msg))
	req.SetSource("127.0.0.1:5061")
	req.SetTransport("UDP")
	return req
}

// TestTryingFor_Allocations: the 100 Trying shares the request's header
// values (sipgo's copy took 14 allocations for a sipp INVITE).
func TestTryingFor_Allocations(t *testing.T) {
	req := parseWith(t, strings.ReplaceAll(rawINVITE, "\n", "\r\n"))
	sipgo := testing.AllocsPerRun(100, func() { _ = sip.NewResponseFromRequest(req, 100, "Trying", nil) })
	ours := testing.AllocsPerRun(100, func() { _ = tryingFor(req) })
	t.Logf("allocations: sipgo %v, tryingFor %v", sipgo, ours)
	if ours > 5 {
		t.Errorf("tryingFor allocates %v times, want at most 5 (sipgo: %v)", ours, sipgo)
	}
}
