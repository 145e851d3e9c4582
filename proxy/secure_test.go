package proxy

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestNodeTransportOK_TLSAndWebSocketNeedTheirListener(t *testing.T) {
	withTLS := &Proxy{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	withTLS.secure = []secureListener{{listenAddr: listenAddr{tp: "tls"}, l: l}}
	withWS := &Proxy{secure: []secureListener{{listenAddr: listenAddr{tp: "ws"}, l: l}}}
	cases := []struct {
		name      string
		p         *Proxy
		transport string
		want      string // "" = usable
	}{
		{"udp", &Proxy{}, "udp", ""},
		{"tcp", &Proxy{}, "tcp", ""},
		{"tls with tls_listen", withTLS, "tls", ""},
		{"tls without tls_listen", &Proxy{}, "tls", "needs tls_listen"},
		{"ws without ws_listen", withTLS, "ws", "transport ws needs ws_listen"},
		{"wss without wss_listen", withTLS, "wss", "transport wss needs wss_listen"},
		{"ws with ws_listen", withWS, "ws", ""},
		{"sctp", withTLS, "sctp", "transport sctp toward nodes is not supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.nodeTransportOK(tc.transport)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("err %v, want none", err)
			case tc.want != "" && (!errors.Is(err, ErrNodeTransport) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err %v, want ErrNodeTransport saying %q", err, tc.want)
			}
		})
	}
}

// TestSendsFrom_ViaNamesTheTLSListener: a request relayed over TLS names
// sipedge's TLS listener in its Via (where a new connection would go).
func TestSendsFrom_ViaNamesTheTLSListener(t *testing.T) {
	p := benchProxy()
	p.secure = []secureListener{{listenAddr: listenAddr{tp: "tls", host: "127.0.0.1", port: 5061}}}
	in := multiInvite(t, "127.0.0.1:5060", "127.0.0.9:4000")
	for _, tc := range []struct {
		transport string
		port      int
	}{{"udp", 5060}, {"tcp", 5060}, {"tls", 5061}} {
		if got := p.sendsFrom(in, hop{addr: "127.0.0.5:5061", transport: tc.transport}); got.port != tc.port || got.host != "127.0.0.1" {
			t.Errorf("%s: Via %s:%d, want 127.0.0.1:%d", tc.transport, got.host, got.port, tc.port)
		}
	}
}
