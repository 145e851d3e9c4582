package proxy

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// secureMultiProxy is multiProxy with TLS on 127.0.0.1:5061 and
// 127.0.0.2:5061, WS on 127.0.0.2:8080 advertised as ws2.example:80, and
// its [::1] address advertised as edge6.example.
func secureMultiProxy() *Proxy {
	p := multiProxy()
	p.extra[0].bound, p.extra[0].host = "::1", "edge6.example"
	for _, s := range []struct {
		tp, host, bound string
		port, boundPort int
	}{{"tls", "127.0.0.1", "", 5061, 5061}, {"tls", "127.0.0.2", "", 5061, 5061}, {"ws", "ws2.example", "127.0.0.2", 80, 8080}} {
		ip := net.ParseIP(s.host)
		if s.bound != "" {
			ip = net.ParseIP(s.bound)
		}
		p.secure = append(p.secure, secureListener{listenAddr: listenAddr{tp: s.tp, host: s.host, port: s.port,
			bound: s.bound, la: sip.Addr{IP: ip, Port: s.boundPort}}})
	}
	return p
}

// TestRecordRoute_NamesTheSecureListenerUsed: over TLS or WS the
// Record-Route toward the caller names the listener the Request-URI names
// (by its advertised name, also when the URI gives its IP); toward a UDP
// node the UDP address on the same IP, else the first of its family.
func TestRecordRoute_NamesTheSecureListenerUsed(t *testing.T) {
	cases := []struct {
		name, tp, ruri, source, node string
		want                         []string // top first
	}{
		{"TLS on the first address", "TLS", "127.0.0.1:5061", "127.0.0.9:4000", "127.0.0.5:5080",
			[]string{"127.0.0.1:5060/udp", "127.0.0.1:5061/tls"}},
		{"TLS on the second: the UDP address on its IP faces the node", "TLS", "127.0.0.2:5061", "127.0.0.9:4000", "127.0.0.5:5080",
			[]string{"127.0.0.2:5070/udp", "127.0.0.2:5061/tls"}},
		{"WS by its bound IP: named by its advertise", "WS", "127.0.0.2:8080", "127.0.0.9:4000", "127.0.0.5:5080",
			[]string{"127.0.0.2:5070/udp", "ws2.example:80/ws"}},
		{"WS by its advertised name", "WS", "ws2.example:80", "127.0.0.9:4000", "127.0.0.5:5080",
			[]string{"127.0.0.2:5070/udp", "ws2.example:80/ws"}},
		{"Request-URI without a port: TLS's 5061", "TLS", "127.0.0.2", "127.0.0.9:4000", "127.0.0.5:5080",
			[]string{"127.0.0.2:5070/udp", "127.0.0.2:5061/tls"}},
		{"Request-URI names no listener: the first TLS of the family", "TLS", "conf.example", "127.0.0.9:4000", "127.0.0.5:5080",
			[]string{"127.0.0.1:5060/udp", "127.0.0.1:5061/tls"}},
		{"UDP to the advertised IPv6 address by its IP", "UDP", "[::1]:5060", "[::1]:4000", "127.0.0.5:5080",
			[]string{"127.0.0.1:5060/udp", "edge6.example:5060/udp"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := secureMultiProxy()
			in := multiInvite(t, tc.ruri, tc.source)
			in.SetTransport(tc.tp)
			out := forwardCopy(in)
			st := routeState{NodeAddr: tc.node, NodeTransport: "udp", PeerAddr: tc.source, PeerTransport: strings.ToLower(tc.tp), FromTag: "caller1"}
			rr := p.recordRoute(in, st)
			p.prepareForward(in, out, hop{addr: tc.node, transport: "udp"}, []byte("z9hG4bK-s"), rr.list())
			if got := recordRoutes(out); strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("Record-Route %q, want %q", got, tc.want)
			}
			top := strings.TrimSuffix(tc.want[0], "/udp")
			if via := out.Via(); net.JoinHostPort(via.Host, fmt.Sprint(via.Port)) != top {
				t.Errorf("Via %s:%d, want %s", via.Host, via.Port, top)
			}
		})
	}
}

// TestOnTransport_PicksTheListenerNearTheAddress: a request leaving over
// TLS from near an address names the TLS listener on that IP, else the
// first of its family; without a listener of that transport the address
// stays.
func TestOnTransport_PicksTheListenerNearTheAddress(t *testing.T) {
	p := secureMultiProxy()
	second := p.extra[1].listenAddr // 127.0.0.2:5070
	if got := p.onTransport(second, "tls"); got.host != "127.0.0.2" || got.port != 5061 || got.tp != "tls" {
		t.Errorf("TLS near 127.0.0.2 = %+v", got)
	}
	if got := p.onTransport(p.extra[0].listenAddr, "tls"); got.host != "127.0.0.1" || got.port != 5061 {
		t.Errorf("TLS near [::1] (no IPv6 TLS listener): %+v, want the first", got)
	}
	if got := p.onTransport(second, "wss"); got.host != second.host || got.port != second.port {
		t.Errorf("no WSS listener: %+v, want the address unchanged", got)
	}
	if got := p.onTransport(p.secure[2].listenAddr, "udp"); got.host != "127.0.0.2" || got.port != 5070 || got.tp != "" {
		t.Errorf("UDP near the WS listener on 127.0.0.2 = %+v", got)
	}
}
