package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipedge/sipedge/ring"
)

func TestSanity_Answers(t *testing.T) {
	ok := baseHeaders
	for _, tc := range []struct {
		name, start string
		headers     []string
		code        int
		unsupported string
	}{
		{"valid", "INVITE sip:conf@example.com SIP/2.0", ok, 0, ""},
		{"another SIP version (badvers)", "INVITE sip:conf@example.com SIP/7.0", ok, 505, ""},
		{"unknown Request-URI scheme (unkscm)", "INVITE nobody:opaque SIP/2.0", ok, 416, ""},
		{"tel URI", "INVITE tel:+15551234 SIP/2.0", ok, 0, ""},
		{"headers in the Request-URI (escruri)", "INVITE sip:conf@example.com?Route=%3Csip:x%3E SIP/2.0", ok, 400, ""},
		{"two To (multi01)", "INVITE sip:conf@example.com SIP/2.0", append(append([]string{}, ok...), "To: <sip:other@example.com>"), 400, ""},
		{"two CSeq", "INVITE sip:conf@example.com SIP/2.0", append(append([]string{}, ok...), "CSeq: 2 INVITE"), 400, ""},
		{"Proxy-Require (bext01)", "INVITE sip:conf@example.com SIP/2.0", append(append([]string{}, ok...), "Proxy-Require: foo, bar", "Proxy-Require: baz"), 420, "foo, bar, baz"},
		{"Require is the UAS's business", "INVITE sip:conf@example.com SIP/2.0", append(append([]string{}, ok...), "Require: foo"), 0, ""},
		{"CANCEL is never refused for an extension", "CANCEL sip:conf@example.com SIP/2.0", without("CSeq:", "CSeq: 1 CANCEL", "Proxy-Require: foo"), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := parseRequest(t, msgWith(tc.start, tc.headers...))
			code, _, unsupported := sanity(req)
			if code != tc.code || unsupported != tc.unsupported {
				t.Fatalf("sanity = %d, Unsupported %q; want %d, %q", code, unsupported, tc.code, tc.unsupported)
			}
		})
	}
}

func TestRawVerdictAndResponse(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		code      int
		nilAnswer bool
	}{
		{"bad header, readable Via", "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;;,;\r\nFrom: x\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\r\n", 400, false},
		{"another version", "OPTIONS sip:a@b SIP/3.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n", 505, false},
		{"unknown scheme (novelsc)", "OPTIONS soap.beep://192.0.2.1:3002 SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n", 416, false},
		{"<> around the Request-URI (ltgtruri)", "INVITE <sip:a@b> SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.5\r\n\r\n", 400, false},
		{"no Via: cannot answer", "INVITE sip:a@b SIP/2.0\r\nFrom: x\r\n\r\n", 400, true},
		{"junk start line", "hello\r\nVia: SIP/2.0/UDP h\r\n\r\n", 400, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, reason := rawVerdict([]byte(tc.raw), "some\r\nparse error")
			if code != tc.code {
				t.Fatalf("code %d; want %d", code, tc.code)
			}
			if strings.ContainsAny(reason, "\r\n") {
				t.Fatalf("reason %q carries CR/LF", reason)
			}
			out := rawResponse([]byte(tc.raw), code, reason, "srv")
			if (out == nil) != tc.nilAnswer {
				t.Fatalf("answer %q; want nil=%v", out, tc.nilAnswer)
			}
			if out == nil {
				return
			}
			s := string(out)
			if !strings.HasPrefix(s, fmt.Sprintf("SIP/2.0 %d ", code)) || !strings.HasSuffix(s, "Content-Length: 0\r\n\r\n") {
				t.Fatalf("answer %q", s)
			}
			if !strings.Contains(strings.ToLower(s), "\r\nvia:") && !strings.Contains(s, "\r\nv:") {
				t.Fatalf("answer without the Via: %q", s)
			}
		})
	}
	out := string(rawResponse([]byte("INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\n\r\n"), 400, "Bad Request", ""))
	if !strings.Contains(out, "To: <sip:a@b>;tag=sE") {
		t.Fatalf("a stateless answer carries a To tag: %q", out)
	}
	for _, tc := range []struct{ to, want string }{
		{`To: "Stage" <sip:vintage@b>`, `To: "Stage" <sip:vintage@b>;tag=sE`}, // "tag" in a name or URI is no tag
		{`To: <sip:a@b>;tag=x1`, "To: <sip:a@b>;tag=x1\r\n"},                  // kept, no second tag
		{`To: sip:a@b ; TAG = x2`, "To: sip:a@b ; TAG = x2\r\n"},              // addr-spec form, any case and LWS
	} {
		out := string(rawResponse([]byte("INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"+tc.to+"\r\n\r\n"), 400, "Bad Request", ""))
		if !strings.Contains(out, tc.want) {
			t.Errorf("%s: answer %q lacks %q", tc.to, out, tc.want)
		}
	}
}

func TestFrame(t *testing.T) {
	const max = 200
	for _, tc := range []struct {
		name string
		in   string
		n    int
		st   frameStatus
	}{
		{"empty", "", 0, frameNeedMore},
		{"keepalive", "\r\n\r\nOPTIONS", 4, frameKeepalive},
		{"header incomplete", "OPTIONS sip:a SIP/2.0\r\nVia: x", 0, frameNeedMore},
		{"no body", "OPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\nNEXT", 44, frameOK},
		{"compact l", "OPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabcNEXT", 34, frameOK},
		{"body incomplete", "OPTIONS sip:a SIP/2.0\r\nl: 9\r\n\r\nabc", 0, frameNeedMore},
		{"missing Content-Length", "OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n", 0, frameBad},
		{"negative", "OPTIONS sip:a SIP/2.0\r\nl: -1\r\n\r\n", 0, frameBad},
		{"two different (mcl01)", "OPTIONS sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab", 0, frameBad},
		{"two equal", "OPTIONS sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\na", 51, frameOK},
		{"body over max", "OPTIONS sip:a SIP/2.0\r\nl: 500\r\n\r\n", 0, frameTooLarge},
		{"header over max", "OPTIONS sip:a SIP/2.0\r\nX: " + strings.Repeat("x", 300), 0, frameTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, st, _ := frame([]byte(tc.in), max)
			if n != tc.n || st != tc.st {
				t.Fatalf("frame = %d, %d; want %d, %d", n, st, tc.n, tc.st)
			}
		})
	}
}

func TestRawSanity(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, why string
	}{
		{"plain", "INVITE sip:a SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\n\r\nbody tag = x", "", ""},
		{"unquoted display name with a comma (baddn)", "OPTIONS sip:a SIP/2.0\r\nFrom:    Bell, Alexander <sip:a@b>;tag=43\r\n\r\n", "", "display name"},
		{"quoted display name with a comma", "OPTIONS sip:a SIP/2.0\r\nFrom: \"Bell, Alexander\" <sip:a@b>;tag=43\r\n\r\n", "", ""},
		{"tokens", "OPTIONS sip:a SIP/2.0\r\nt: A. Bell <sip:a@b>\r\n\r\n", "", ""},
		{"LWS around the tag's = (wsinv)", "INVITE sip:a SIP/2.0\r\nTO :\r\n sip:v@e ;   tag    = 19n\r\nfrom : <sip:j@e>\r\n  ;\r\n  tag = 98\r\nX: tag = 1\r\n\r\nbody",
			"INVITE sip:a SIP/2.0\r\nTO :\r\n sip:v@e ;tag=19n\r\nfrom : <sip:j@e>\r\n  ;tag=98\r\nX: tag = 1\r\n\r\nbody", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := []byte(tc.in)
			n, why := rawSanity(b)
			if why != tc.why {
				t.Fatalf("why %q; want %q", why, tc.why)
			}
			want := tc.want
			if want == "" {
				want = tc.in
			}
			if string(b[:n]) != want {
				t.Fatalf("got\n%q\nwant\n%q", b[:n], want)
			}
		})
	}
}

// startWireProxy runs a proxy with the given wire options in front of one
// node at nodeAddr (transport udp or tcp).
func startWireProxy(t *testing.T, w WireOptions, nodeAddr, transport string) (*Proxy, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	px, err := New(Options{Listen: "127.0.0.1:0", RouteSecret: "s", UserAgent: "sipedge-test", Wire: w},
		&fakeAdmitter{node: ring.Node{Name: "n1", Addr: nodeAddr, Transport: transport}}, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, px)
	return px, reg
}

func withBody(msg string, size int) string {
	body := strings.Repeat("a=x-pad:"+strings.Repeat("b", 70)+"\r\n", size/80+1)[:size]
	head, _, _ := strings.Cut(msg, "\r\n\r\n")
	head = strings.Replace(head, "Content-Length: 0", fmt.Sprintf("Content-Type: application/sdp\r\nContent-Length: %d", len(body)), 1)
	return head + "\r\n\r\n" + body
}

// Sizes over UDP: a 20 kB answer is relayed whole, a request above
// max_message_size gets 513, a response above it is dropped and counted.
func TestWire_UDPSizes(t *testing.T) {
	node := newPeer(t)
	px, _ := startWireProxy(t, WireOptions{MaxMessageSize: 30000}, node.addr(), "udp")
	caller := newPeer(t)
	norm := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n") }

	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "size-1", "z9hG4bK-s1", 70))
	inv := node.recv("INVITE ")
	node.send(px.Addr(), withBody(norm(answer(inv, 200, "OK", "n1", node.addr())), 20000))
	ok := caller.recv("SIP/2.0 200")
	if len(ok) < 20000 {
		t.Fatalf("the caller got a %d-byte 200; want the whole 20 kB answer", len(ok))
	}

	caller.send(px.Addr(), withBody(norm(invite(caller, "sip:conf1@"+px.Addr(), "size-2", "z9hG4bK-s2", 70)), 31000))
	caller.recv("SIP/2.0 513 Message Too Large")

	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "size-3", "z9hG4bK-s3", 70))
	inv = node.recv("INVITE ")
	node.send(px.Addr(), withBody(norm(answer(inv, 200, "OK", "n1", node.addr())), 31000))
	waitFor(t, func() bool {
		return testutil.ToFloat64(px.metrics.notSent.WithLabelValues(notSentRespTooBig)) == 1
	}, "the oversized response counted")
}

// A node whose hash says tcp is reached over TCP.
func TestWire_TCPToNode(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	px, _ := startWireProxy(t, WireOptions{}, l.Addr().String(), "tcp")
	caller := newPeer(t)
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "tcpnode-1", "z9hG4bK-t1", 70))
	_ = l.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("no TCP connection to the node: %v", err)
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INVITE sip:conf1@"+l.Addr().String()) {
		t.Fatalf("node got %q, %v", line, err)
	}
}

// No DNS query for a host name: the resolver refuses and counts.
func TestWire_NoDNS(t *testing.T) {
	px, _ := startWireProxy(t, WireOptions{}, "127.0.0.1:9", "udp")
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: "caller.sipedge-test.invalid", Port: 5060})
	req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: 1,
		Params: sip.HeaderParams{{K: "branch", V: "z9hG4bK-dns"}}})
	req.SetDestination("caller.sipedge-test.invalid:5060")
	err := px.client.WriteRequest(req, keepAsBuilt)
	if err == nil || !errors.Is(err, errNoDNS) && !strings.Contains(err.Error(), errNoDNS.Error()) {
		t.Fatalf("WriteRequest to a host name: %v; want the DNS-off refusal", err)
	}
	if got := px.metrics.dnsCount.Load(); got == 0 {
		t.Fatal("the refused lookup was not counted")
	}
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readsEOFWithin reports how long until the peer closed c, and whether it
// did before limit.
func readsEOFWithin(c net.Conn, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	// EOF, or a reset when the closed side still got bytes: closed either way.
	return time.Since(start), err == nil || !(errors.As(err, &ne) && ne.Timeout())
}

func TestWire_TCPLimits(t *testing.T) {
	px, _ := startWireProxy(t, WireOptions{TCPIdleTimeout: 300 * time.Millisecond, TCPHeaderTimeout: 400 * time.Millisecond,
		TCPMaxConnsPerSource: 3}, "127.0.0.1:9", "udp")

	t.Run("idle", func(t *testing.T) {
		c := dialTCP(t, px.Addr())
		if d, closed := readsEOFWithin(c, 3*time.Second); !closed || d < 250*time.Millisecond {
			t.Fatalf("idle connection closed=%v after %v; want closed after ~300ms", closed, d)
		}
	})
	t.Run("slow header", func(t *testing.T) {
		c := dialTCP(t, px.Addr())
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for _, b := range []byte("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1\r\n") {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond): // never idle, never done
				}
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
			}
		}()
		if d, closed := readsEOFWithin(c, 3*time.Second); !closed || d > 1500*time.Millisecond {
			t.Fatalf("slow sender closed=%v after %v; want cut after ~400ms", closed, d)
		}
	})
	waitFor(t, func() bool { return testutil.ToFloat64(px.metrics.tcpOpen) == 0 }, "connections released")
	t.Run("per source", func(t *testing.T) {
		var conns []net.Conn
		for i := 0; i < 4; i++ {
			conns = append(conns, dialTCP(t, px.Addr()))
		}
		if _, closed := readsEOFWithin(conns[3], 200*time.Millisecond); !closed {
			t.Fatal("the 4th connection of one source stayed open")
		}
		if got := testutil.ToFloat64(px.metrics.tcpClosed.WithLabelValues(tcpClosedPerSource)); got != 1 {
			t.Fatalf("per_source_limit closures %v; want 1", got)
		}
	})
	for _, r := range []string{tcpClosedIdle, tcpClosedHeaderTimeout} {
		if got := testutil.ToFloat64(px.metrics.tcpClosed.WithLabelValues(r)); got < 1 {
			t.Errorf("closures %s = %v; want >= 1", r, got)
		}
	}
}

// On TCP a framing error is answered, and the connection closes only after
// the request before it has its answer (RFC 4475 dblreq).
func TestWire_TCPFramingErrorAfterAnswers(t *testing.T) {
	node := newPeer(t)
	px, _ := startWireProxy(t, WireOptions{}, node.addr(), "udp")
	c := dialTCP(t, px.Addr())
	local := c.LocalAddr().String()
	good := "OPTIONS sip:conf1@" + px.Addr() + " SIP/2.0\r\nVia: SIP/2.0/TCP " + local + ";branch=z9hG4bK-f1\r\n" +
		"From: <sip:a@x>;tag=1\r\nTo: <sip:conf1@x>\r\nCall-ID: frame-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	bad := "OPTIONS sip:conf1@" + px.Addr() + " SIP/2.0\r\nVia: SIP/2.0/TCP " + local + ";branch=z9hG4bK-f2\r\n" +
		"Call-ID: frame-2\r\nCSeq: 2 OPTIONS\r\nContent-Length: many\r\n\r\n"
	if _, err := c.Write([]byte(good + bad)); err != nil {
		t.Fatal(err)
	}
	opt := node.recv("OPTIONS ")
	time.Sleep(300 * time.Millisecond) // the connection must still be open for the late answer
	node.send(px.Addr(), answer(opt, 200, "OK", "n1", node.addr()))
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading until sipedge closes: %v (got %q)", err, all)
	}
	s := string(all)
	if !strings.Contains(s, "SIP/2.0 400 Bad Request (bad Content-Length)") || !strings.Contains(s, "SIP/2.0 200 OK") {
		t.Fatalf("want the 400 for the broken message and the node's 200 before the close; got %q", s)
	}
	if got := testutil.ToFloat64(px.metrics.tcpClosed.WithLabelValues(tcpClosedFraming)); got != 1 {
		t.Fatalf("framing closures %v; want 1", got)
	}
	_ = context.Background
}

func TestTopViaPort(t *testing.T) {
	for in, want := range map[string]int{
		"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.9:5099;branch=z9hG4bK1\r\n\r\n":        5099,
		"SIP/2.0 200 OK\r\nv: SIP/2.0/TCP host.example;rport=4000;branch=z9hG4bK1\r\n\r\n": 4000,
		"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP host.example;rport;branch=z9hG4bK1\r\n\r\n":    5060,
		"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP [2001:db8::1]:6000, SIP/2.0/UDP x:1\r\n\r\n":   6000,
		"SIP/2.0 200 OK\r\nFrom: <sip:a@b>\r\n\r\n":                                        5060,
	} {
		if got := topViaPort([]byte(in)); got != want {
			t.Errorf("topViaPort(%q) = %d; want %d", in, got, want)
		}
	}
}

// A TCP message larger than one read (and than sipgo's default 32 kB
// buffer), written in pieces, is framed whole and forwarded.
func TestWire_TCPLargeMessageInPieces(t *testing.T) {
	node := newPeer(t)
	px, _ := startWireProxy(t, WireOptions{}, node.addr(), "udp")
	c := dialTCP(t, px.Addr())
	local := c.LocalAddr().String()
	msg := withBody("INVITE sip:conf1@"+px.Addr()+" SIP/2.0\r\nVia: SIP/2.0/TCP "+local+";branch=z9hG4bK-big1\r\n"+
		"From: <sip:a@x>;tag=1\r\nTo: <sip:conf1@x>\r\nCall-ID: tcp-big-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", 40000)
	for i := 0; i < len(msg); i += 15000 {
		if _, err := c.Write([]byte(msg[i:min(i+15000, len(msg))])); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	inv := node.recv("INVITE ")
	if len(inv) < 40000 {
		t.Fatalf("node got a %d-byte INVITE; want the whole 40 kB", len(inv))
	}
}

// A proxy's sipgo keeps an ended client INVITE transaction for T1 only,
// not Timer M's 64×T1: the finished table matches 2xx retransmissions,
// and a 32 s Timer M held every ended transaction (half the heap at 2000
// calls/s, BENCHMARKS.md "Timer M").
func TestWire_TimerMShort(t *testing.T) {
	node := newPeer(t)
	startWireProxy(t, WireOptions{}, node.addr(), "udp")
	if sip.Timer_M != sip.T1 {
		t.Errorf("sipgo Timer M = %v after a proxy started, want T1 (%v)", sip.Timer_M, sip.T1)
	}
}
