package app

import (
	"net/netip"
	"testing"

	"github.com/sipedge/sipedge/internal/config"
)

func TestMediaAddrs(t *testing.T) {
	tests := []struct {
		name                 string
		listen, ip, adv, sip string
		bind, advertise      string
		other                string // the dual-stack pool's second address, "" none
	}{
		{"one IPv4 address", "127.0.0.1:5060", "", "", "", "127.0.0.1", "127.0.0.1", ""},
		{"one IPv6 address", "[::1]:5060", "", "", "", "::1", "::1", ""},
		{"wildcard: the SIP advertise host", "0.0.0.0:5060", "", "", "192.0.2.7:5060", "0.0.0.0", "192.0.2.7", ""},
		{"IPv4 and IPv6: dual-stack", "127.0.0.1:5060,[::1]:5060", "", "", "", "::", "127.0.0.1", "::1"},
		{"IPv6 first: dual-stack", "[::1]:5060,127.0.0.1:5060", "", "", "", "::", "::1", "127.0.0.1"},
		{"dual-stack with media_advertise", "127.0.0.1:5060,[::1]:5060", "", "192.0.2.9", "", "::", "192.0.2.9", "::1"},
		{"media_ip wins", "127.0.0.1:5060,[::1]:5060", "127.0.0.2", "", "", "127.0.0.2", "127.0.0.2", ""},
		{"media_ip :: is dual-stack", "127.0.0.1:5060,[::1]:5060", "::", "", "", "::", "127.0.0.1", "::1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Listen, cfg.MediaIP, cfg.MediaAdvertise, cfg.Advertise = tc.listen, tc.ip, tc.adv, tc.sip
			bind, adv := mediaAddrs(cfg)
			if bind.String() != tc.bind || adv.String() != tc.advertise {
				t.Fatalf("bind %v advertise %v, want %s %s", bind, adv, tc.bind, tc.advertise)
			}
			other := ""
			if bind.Is6() && bind.IsUnspecified() {
				if o := otherFamily(cfg, adv); o.IsValid() {
					other = o.String()
				}
			}
			if other != tc.other {
				t.Fatalf("second address %q, want %q", other, tc.other)
			}
			if tc.other != "" && netip.MustParseAddr(tc.other).Is4() == adv.Is4() {
				t.Fatalf("both addresses of one family")
			}
		})
	}
}
