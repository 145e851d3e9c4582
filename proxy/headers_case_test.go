package proxy

import "testing"

// lower and upper answer as strings.ToLower/ToUpper, and allocate nothing
// for the transport names every message carries.
func TestLowerUpper_TransportNames(t *testing.T) {
	cases := []struct{ in, lo, up string }{
		{"UDP", "udp", "UDP"}, {"udp", "udp", "UDP"}, {"TCP", "tcp", "TCP"}, {"tcp", "tcp", "TCP"},
		{"TLS", "tls", "TLS"}, {"tls", "tls", "TLS"}, {"Ws", "ws", "WS"}, {"", "", ""},
	}
	for _, c := range cases {
		if got := lower(c.in); got != c.lo {
			t.Errorf("lower(%q) = %q, want %q", c.in, got, c.lo)
		}
		if got := upper(c.in); got != c.up {
			t.Errorf("upper(%q) = %q, want %q", c.in, got, c.up)
		}
	}
	for _, in := range []string{"UDP", "udp", "TCP", "TLS"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = lower(in), upper(in) }); n != 0 {
			t.Errorf("lower/upper(%q): %.0f allocations", in, n)
		}
	}
}
