package proxy

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestHeaderLookups_AnyCaseNoAllocation(t *testing.T) {
	cases := []struct {
		name    string
		headers []string // name: value
		trusted string   // value of the first X-Sipedge-* header, "" none
		removed int
	}{
		{"none", []string{"User-Agent: x", "X-Other: y"}, "", 0},
		{"exact case", []string{"User-Agent: x", "X-Sipedge-Role: host"}, "host", 1},
		{"lower case", []string{"x-sipedge-role: guest"}, "guest", 1},
		{"upper case, two of them", []string{"X-SIPEDGE-AUTH: a", "X-Sipedge-Conference: c1"}, "a", 2},
		{"unknown X-Sipedge-* kept", []string{"X-Sipedge-Other: z"}, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", Host: "example.com"})
			for _, h := range tc.headers {
				k, v, _ := cut(h)
				req.AppendHeader(sip.NewHeader(k, v))
			}
			got := ""
			if h := firstTrusted(req); h != nil {
				got = h.Value()
			}
			if got != tc.trusted || hasTrusted(req) != (tc.trusted != "") {
				t.Errorf("firstTrusted = %q, hasTrusted = %v; want %q", got, hasTrusted(req), tc.trusted)
			}
			if a := testing.AllocsPerRun(100, func() { _ = firstTrusted(req); _ = findHeader(req, "user-agent") }); a != 0 {
				t.Errorf("lookups allocate %v times", a)
			}
			if n := removeTrusted(req); n != tc.removed || firstTrusted(req) != nil {
				t.Errorf("removeTrusted = %d, want %d (left %v)", n, tc.removed, firstTrusted(req))
			}
		})
	}
}

func cut(h string) (string, string, bool) {
	for i := 0; i+1 < len(h); i++ {
		if h[i] == ':' {
			return h[:i], h[i+2:], true
		}
	}
	return h, "", false
}
