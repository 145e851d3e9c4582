package proxy

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// multiProxy listens on 127.0.0.1:5060 (first), [::1]:5060 and
// 127.0.0.2:5070.
func multiProxy() *Proxy {
	p := benchProxy()
	p.udpLA = sip.Addr{IP: net.ParseIP("127.0.0.1"), Port: 5060}
	for _, a := range []struct {
		host string
		port int
	}{{"::1", 5060}, {"127.0.0.2", 5070}} {
		ip := net.ParseIP(a.host)
		p.extra = append(p.extra, extraListener{listenAddr: listenAddr{host: a.host, port: a.port,
			la: sip.Addr{IP: ip, Port: a.port}, v6: ip.To4() == nil}})
	}
	return p
}

func multiInvite(t *testing.T, ruriHost, source string) *sip.Request {
	t.Helper()
	req := parseRequest(t, "INVITE sip:conf1@"+ruriHost+" SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP "+source+";branch=z9hG4bK-m1;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=caller1\r\nTo: <sip:conf1@example.com>\r\n"+
		"Call-ID: multi-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@"+source+">\r\nContent-Length: 0\r\n\r\n")
	req.SetSource(source)
	return req
}

func recordRoutes(req *sip.Request) []string {
	var out []string
	for _, h := range req.GetHeaders("Record-Route") {
		var u sip.Uri // sipedge's own is a generic header (newRecordRoute): parse its value
		if err := sip.ParseUri(strings.Trim(h.Value(), "<>"), &u); err != nil {
			return append(out, "unparsable "+h.Value())
		}
		tp, _ := u.UriParams.Get("transport")
		out = append(out, net.JoinHostPort(strings.Trim(u.Host, "[]"), fmt.Sprint(u.Port))+"/"+tp)
	}
	return out
}

// TestRecordRoute_NamesTheAddressTheRequestArrivedOn: RFC 3261 §16.6 on a
// proxy with several interfaces; double Record-Route when the node is
// reached from another address (another family).
func TestRecordRoute_NamesTheAddressTheRequestArrivedOn(t *testing.T) {
	cases := []struct {
		name, ruri, source, node, nodeTP string
		want                             []string // top first
		via                              string
	}{
		{"first address, IPv4 node", "127.0.0.1:5060", "127.0.0.9:4000", "127.0.0.5:5080", "udp",
			[]string{"127.0.0.1:5060/udp"}, "127.0.0.1:5060"},
		{"second IPv4 address", "127.0.0.2:5070", "127.0.0.9:4000", "127.0.0.5:5080", "udp",
			[]string{"127.0.0.2:5070/udp"}, "127.0.0.2:5070"},
		{"IPv6 caller, IPv4 node: double", "[::1]:5060", "[::1]:4000", "127.0.0.5:5080", "udp",
			[]string{"127.0.0.1:5060/udp", "[::1]:5060/udp"}, "127.0.0.1:5060"},
		{"IPv6 caller, IPv6 node", "[::1]:5060", "[::1]:4000", "[::1]:5080", "udp",
			[]string{"[::1]:5060/udp"}, "[::1]:5060"},
		{"IPv4 caller, IPv6 node: double", "127.0.0.2:5070", "127.0.0.9:4000", "[::1]:5080", "udp",
			[]string{"[::1]:5060/udp", "127.0.0.2:5070/udp"}, "[::1]:5060"},
		{"transport and family change", "[::1]:5060", "[::1]:4000", "127.0.0.5:5080", "tcp",
			[]string{"127.0.0.1:5060/tcp", "[::1]:5060/udp"}, "127.0.0.1:5060"},
		{"Request-URI names no address: the sender's family", "conf.example", "[::1]:4000", "[::1]:5080", "udp",
			[]string{"[::1]:5060/udp"}, "[::1]:5060"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := multiProxy()
			in := multiInvite(t, tc.ruri, tc.source)
			out := forwardCopy(in)
			st := routeState{NodeAddr: tc.node, NodeTransport: tc.nodeTP, PeerAddr: tc.source, PeerTransport: "udp", FromTag: "caller1"}
			rr := p.recordRoute(in, st)
			p.prepareForward(in, out, hop{addr: tc.node, transport: tc.nodeTP}, []byte("z9hG4bK-x"), rr.list())
			got := recordRoutes(out)
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("Record-Route %q, want %q", got, tc.want)
			}
			// sipedge's Via on top, its Record-Route right under it.
			hs := out.Headers()
			if len(hs) <= len(tc.want) || hs[0] != sip.Header(out.Via()) {
				t.Fatalf("top header %v, want sipedge's Via", hs[0])
			}
			for i := range tc.want {
				if hs[1+i].Name() != "Record-Route" {
					t.Errorf("header %d under the Via is %s, want Record-Route", i+1, hs[1+i].Name())
				}
			}
			via := out.Via()
			if got := net.JoinHostPort(via.Host, fmt.Sprint(via.Port)); got != tc.via {
				t.Errorf("Via %s, want %s", got, tc.via)
			}
			if tc.nodeTP == "udp" && out.Laddr.String() != tc.via {
				t.Errorf("leaves from %s, want %s", out.Laddr.String(), tc.via)
			}
		})
	}
}

// TestInDialog_LeavesFromTheAddressTheDestinationKnows: after a double
// Record-Route each side's requests come in on its own address and leave
// from the other side's.
func TestInDialog_LeavesFromTheAddressTheDestinationKnows(t *testing.T) {
	p := multiProxy()
	token := p.signer.Encode(routeState{NodeAddr: "127.0.0.5:5080", NodeTransport: "udp",
		PeerAddr: "[::1]:4000", PeerTransport: "udp", FromTag: "caller1"})
	bye := func(routes, source string) *sip.Request {
		var rs string
		for _, r := range strings.Split(routes, " ") {
			rs += "Route: <sip:" + r + ";transport=udp;lr;se=" + token + ">\r\n"
		}
		req := parseRequest(t, "BYE sip:x@"+source+" SIP/2.0\r\nVia: SIP/2.0/UDP "+source+";branch=z9hG4bK-b1\r\n"+
			"Max-Forwards: 70\r\n"+rs+"From: <sip:a@example.com>;tag=node1\r\nTo: <sip:b@example.com>;tag=caller1\r\n"+
			"Call-ID: multi-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
		req.SetSource(source)
		return req
	}
	cases := []struct {
		name, routes, source, dest, want string
	}{
		{"node to IPv6 caller", "127.0.0.1:5060 [::1]:5060", "127.0.0.5:5080", "[::1]:4000", "[::1]:5060"},
		{"IPv6 caller to node", "[::1]:5060 127.0.0.1:5060", "[::1]:4000", "127.0.0.5:5080", "127.0.0.1:5060"},
		{"single route on the second IPv4 address", "127.0.0.2:5070", "127.0.0.5:5080", "127.0.0.9:4000", "127.0.0.2:5070"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := bye(tc.routes, tc.source)
			if _, n, err := p.ourRoute(in); err != nil || n != len(strings.Split(tc.routes, " ")) {
				t.Fatalf("ourRoute: n %d err %v", n, err)
			}
			out := forwardCopy(in)
			p.prepareForward(in, out, hop{addr: tc.dest, transport: "udp"}, []byte("z9hG4bK-y"), nil)
			via := out.Via()
			if got := net.JoinHostPort(via.Host, fmt.Sprint(via.Port)); got != tc.want {
				t.Errorf("Via %s, want %s", got, tc.want)
			}
			if out.Laddr.String() != tc.want {
				t.Errorf("leaves from %s, want %s", out.Laddr.String(), tc.want)
			}
		})
	}
}

func TestNamesUs_EveryListenAddress(t *testing.T) {
	p := multiProxy()
	cases := []struct {
		host string
		port int
		want bool
	}{
		{"127.0.0.1", 5060, true}, {"127.0.0.1", 0, true}, {"[::1]", 5060, true}, {"::1", 5060, true},
		{"127.0.0.2", 5070, true}, {"127.0.0.2", 5060, false}, {"[::1]", 5070, false}, {"127.0.0.3", 5060, false},
	}
	for _, tc := range cases {
		u := sip.Uri{Host: tc.host, Port: tc.port}
		if got := p.namesUs(&u); got != tc.want {
			t.Errorf("namesUs(%s:%d) = %v, want %v", tc.host, tc.port, got, tc.want)
		}
	}
}

// TestIsLoop_OurViaOnAnyAddress: a request that went out from the second
// address and came back unchanged is a loop.
func TestIsLoop_OurViaOnAnyAddress(t *testing.T) {
	p := multiProxy()
	in := multiInvite(t, "[::1]:5060", "[::1]:4000")
	out := forwardCopy(in)
	p.prepareForward(in, out, hop{addr: "[::1]:5060", transport: "udp"}, p.branch(nil, in), nil)
	if !p.isLoop(out) {
		t.Errorf("request with our [::1] Via is not a loop:\n%s", out)
	}
}

func TestListenExtra_BindsAndRefusesBadAddresses(t *testing.T) {
	p := &Proxy{advHost: "127.0.0.1", advPort: 1}
	p.opts.ListenExtra = []string{"127.0.0.2:0", "[::1]:0"}
	if err := p.listenExtra(); err != nil {
		t.Fatal(err)
	}
	defer p.closeExtra()
	got := p.ListenAddrs()
	if len(got) != 3 || !strings.HasPrefix(got[1], "127.0.0.2:") || !strings.HasPrefix(got[2], "[::1]:") {
		t.Errorf("ListenAddrs %q", got)
	}
	for _, bad := range []string{"0.0.0.0:0", "localhost:0", "127.0.0.1:1", "127.0.0.2"} {
		q := &Proxy{advHost: "127.0.0.1", advPort: 1}
		q.opts.ListenExtra = []string{bad}
		if err := q.listenExtra(); err == nil || !strings.Contains(err.Error(), bad) {
			q.closeExtra()
			t.Errorf("listen %q: err %v, want one naming it", bad, err)
		}
	}
}

// TestServeExtra_UDPServedBeforeTCP: each extra address's UDP listener is
// sipgo's before its TCP listener is served, as for the first address
// (ready.go): a request arriving over TCP and forwarded over UDP from that
// address must not make sipgo bind a second socket to it.
func TestServeExtra_UDPServedBeforeTCP(t *testing.T) {
	px, err := New(Options{Listen: "127.0.0.1:0", ListenExtra: []string{"127.0.0.2:0", "127.0.0.3:0"},
		RouteSecret: "test-secret", UserAgent: "sipedge-test"}, &fakeAdmitter{}, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 2*len(px.extra))
	px.serveExtra(errc) // returns once each TCP listener is handed to sipgo
	for _, l := range px.extra {
		addr := l.udp.LocalAddr().String()
		if c, err := px.ua.TransportLayer().GetConnection("udp", addr); err != nil || c == nil {
			t.Errorf("UDP %s not sipgo's when its TCP listener was served (%v)", addr, err)
		}
	}
	px.closeExtra()
	for range 2 * len(px.extra) {
		<-errc
	}
}
