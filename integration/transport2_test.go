package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Issue 10 item 5 (transport leftovers): a BYE sipedge sends on its own
// (here: media timeout) leaves from the listen address the caller's leg
// uses, the one its Record-Route named, and its Via names that address;
// not the first listen address of the caller's family.
func TestTransport2_OwnByeLeavesFromTheAddressTheCallerUsed(t *testing.T) {
	e := newEnv(t)
	e.writeSettings("media_timeout", "2", "guests_only_timeout", "3600")
	port := strconv.Itoa(freePort(t))
	first, second := "127.0.0.1:"+port, "127.0.0.2:"+port
	se := e.startSipedge("A", "--media-ports", mediaPorts(t), "--listen", first+","+second, "--advertise", first)
	_, _ = e.startConfnode("cn1", "--proxy", first, "--rtp=false")
	se.waitRing(t, 5*time.Second, "cn1")

	u := newRTPUA(t, "far")
	if err := u.dial(second, "t2bye"+svcTag()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	u.sending.Store(false) // silent: ended by sipedge after media_timeout
	var bye sipMsg
	select {
	case bye = <-u.byes:
	case <-time.After(8 * time.Second):
		t.Fatal("no BYE from sipedge within 8 s of the caller going silent")
	}
	if r := bye.Header("reason"); !strings.Contains(r, "media timeout") {
		t.Errorf("BYE Reason %q, want media timeout", r)
	}
	if bye.src != second {
		t.Errorf("sipedge's BYE came from %s, want the address the caller used, %s", bye.src, second)
	}
	if vias := bye.Vias(); len(vias) == 0 || !strings.Contains(vias[0], "UDP "+second+";") {
		t.Errorf("sipedge's BYE top Via %q, want it to name %s", vias, second)
	}
}

// dialTLSLink is a TLS caller connected to addr.
func dialTLSLink(t *testing.T, addr string) sipLink {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // self-signed test certificate
	if err != nil {
		t.Fatalf("TLS to sipedge %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	r := bufio.NewReader(c)
	return sipLink{addr: c.LocalAddr().String(), tp: "TLS",
		send: func(m string) error { _, err := io.WriteString(c, m); return err },
		recv: func() (string, error) {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			return readStreamMessage(r)
		}}
}

// dialWSLink is a WebSocket caller connected to addr.
func dialWSLink(t *testing.T, addr string) sipLink {
	t.Helper()
	wc, _, _, err := ws.Dialer{Protocols: []string{"sip"}}.Dial(context.Background(), "ws://"+addr)
	if err != nil {
		t.Fatalf("WebSocket to sipedge %s: %v", addr, err)
	}
	t.Cleanup(func() { wc.Close() })
	return sipLink{addr: wc.LocalAddr().String(), tp: "WS",
		send: func(m string) error { return wsutil.WriteClientText(wc, []byte(m)) },
		recv: func() (string, error) {
			_ = wc.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, err := wsutil.ReadServerText(wc)
			return string(b), err
		}}
}

// TLS and WebSocket listeners on two addresses each, and an advertise per
// listen address (Kamailio's `listen=... advertise HOST:PORT`): a call
// over each completes (INVITE, ACK, in-dialog BYE routed back by the
// Record-Route) and the Record-Route toward the caller names the listener
// the caller used, by its advertised name where it has one. (The node,
// sipp, answers a BYE to its Via's sent-by, so the advertised name is on
// the IPv6 address, which the IPv4 node is never reached from.)
func TestTransport2_TLSAndWSOnSeveralAddressesWithAdvertise(t *testing.T) {
	e := newEnv(t)
	node := e.startNode("n1")
	cert, key := selfSigned(t, t.TempDir(), "edge.example")
	p, tp, wp := strconv.Itoa(freePort(t)), strconv.Itoa(freePort(t)), strconv.Itoa(freePort(t))
	udp1, udp6 := "127.0.0.1:"+p, "[::1]:"+p
	tls1, tls2 := "127.0.0.1:"+tp, "127.0.0.2:"+tp
	ws1, ws2 := "127.0.0.1:"+wp, "127.0.0.2:"+wp
	s := e.startSipedge("A", "--listen", udp1+","+udp6+" advertise edge6.test:"+p, "--advertise", udp1,
		"--tls-listen", tls1+","+tls2, "--ws-listen", ws1+","+ws2+" advertise ws2.test:"+wp,
		"--tls-cert", cert, "--tls-key", key)
	s.waitRing(t, 5*time.Second, "n1")

	toNode := udp1 + ";transport=udp" // the node's side: the IPv4 address
	cases := []struct {
		name string
		link func() sipLink
		to   string
		rr   []string // Record-Route entries, top first: HOST:PORT;transport=T
	}{
		{"UDP on the IPv6 address: its advertise", func() sipLink { return udpLink(t, "[::1]:0", udp6) }, udp6,
			[]string{toNode, "edge6.test:" + p + ";transport=udp"}},
		{"TLS on the first address", func() sipLink { return dialTLSLink(t, tls1) }, tls1,
			[]string{toNode, tls1 + ";transport=tls"}},
		{"TLS on the second address", func() sipLink { return dialTLSLink(t, tls2) }, tls2,
			[]string{toNode, tls2 + ";transport=tls"}},
		{"WS on the first address", func() sipLink { return dialWSLink(t, ws1) }, ws1,
			[]string{toNode, ws1 + ";transport=ws"}},
		{"WS on the second address: its advertise", func() sipLink { return dialWSLink(t, ws2) }, ws2,
			[]string{toNode, "ws2.test:" + wp + ";transport=ws"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(node.received(t, "BYE"))
			ok := tc.link().call(t, tc.to, "t2multi"+svcTag())
			rr := recordRouteLines(ok)
			if len(rr) != len(tc.rr) {
				t.Fatalf("Record-Route %q, want %d naming %q", rr, len(tc.rr), tc.rr)
			}
			for i, want := range tc.rr {
				if !strings.HasPrefix(rr[i], "<sip:"+want+";lr;") {
					t.Errorf("Record-Route %d is %s, want it to name %s", i, rr[i], want)
				}
			}
			eventually(t, 3*time.Second, "node got the BYE", func() string {
				if n := len(node.received(t, "BYE")); n <= before {
					return "BYEs " + strconv.Itoa(n)
				}
				return ""
			})
		})
	}
}

// A malformed listen, tls_listen or ws_listen entry stops start-up with
// an error naming the field and the entry.
func TestTransport2_BadListenEntryNamed(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		field string
		entry string
	}{
		{"listen: advertise without a value", []string{"--listen", "127.0.0.1:0,127.0.0.2:0 advertise"}, "listen", "127.0.0.2:0 advertise"},
		{"listen: misspelt keyword", []string{"--listen", "127.0.0.1:0 advertize edge.test"}, "listen", "127.0.0.1:0"},
		{"tls_listen: second entry without port", []string{"--tls-listen", "127.0.0.1:0,127.0.0.2", "--tls-cert", "x", "--tls-key", "y"}, "tls_listen", "127.0.0.2"},
		{"ws_listen: bad advertise port", []string{"--ws-listen", "127.0.0.1:0 advertise ws.test:99999"}, "ws_listen", "127.0.0.1:0 advertise ws.test:99999"},
		{"advertise twice for the first address", []string{"--listen", "127.0.0.1:0 advertise a.test", "--advertise", "b.test"}, "advertise", "b.test"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := exec.Command(binary(t, "sipedge"), append(tc.args, "--redis", "127.0.0.1:1")...).CombinedOutput()
			out := string(b)
			if err == nil || !strings.Contains(out, `"`+tc.field+`"`) || !strings.Contains(out, tc.entry) {
				t.Fatalf("exit %v, output %s: want a failure naming %s and %q", err, out, tc.field, tc.entry)
			}
		})
	}
}

// wsNode is a SIP node reached over WebSocket (RFC 7118) or secure
// WebSocket: it answers OPTIONS, INVITE and BYE with 200 (echoing
// Record-Route on the INVITE's) and records the requests it got.
type wsNode struct {
	addr  string
	conns atomic.Int32 // WebSocket connections accepted
	mu    sync.Mutex
	got   []string          // request lines
	vias  map[string]string // method -> top Via of the last one
	// the last dialog set up, for a BYE of the node's own (hangUp)
	conn    net.Conn
	invite  sipMsg
	answers chan sipMsg // responses to the node's own requests
}

func startWSNode(t *testing.T, conf *tls.Config) *wsNode {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if conf != nil {
		l = tls.NewListener(l, conf)
	}
	t.Cleanup(func() { l.Close() })
	n := &wsNode{addr: l.Addr().String(), answers: make(chan sipMsg, 4), vias: map[string]string{}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go n.serve(c)
		}
	}()
	return n
}

func (n *wsNode) serve(c net.Conn) {
	defer c.Close()
	up := ws.Upgrader{Protocol: func(p []byte) bool { return string(p) == "sip" }}
	if _, err := up.Upgrade(c); err != nil {
		return
	}
	n.conns.Add(1)
	for {
		data, err := wsutil.ReadClientText(c)
		if err != nil {
			return
		}
		m := parseRaw(string(data))
		if m.Code != 0 {
			select {
			case n.answers <- m:
			default:
			}
			continue
		}
		if m.Method == "" {
			continue
		}
		n.mu.Lock()
		n.got = append(n.got, strings.SplitN(string(data), "\r\n", 2)[0])
		if v := m.Vias(); len(v) > 0 {
			n.vias[m.Method] = v[0]
		}
		if m.Method == "INVITE" {
			n.conn, n.invite = c, m
		}
		n.mu.Unlock()
		if m.Method == "ACK" {
			continue
		}
		res := "SIP/2.0 200 OK\r\n"
		for _, v := range m.hdr["via"] {
			res += "Via: " + v + "\r\n"
		}
		if m.Method == "INVITE" {
			for _, rr := range m.hdr["record-route"] {
				res += "Record-Route: " + rr + "\r\n"
			}
		}
		to := m.Header("to")
		if !strings.Contains(to, "tag=") {
			to += ";tag=wsnode"
		}
		res += "From: " + m.Header("from") + "\r\nTo: " + to + "\r\nCall-ID: " + m.CallID() + "\r\nCSeq: " + m.CSeq() +
			"\r\nContact: <sip:node@" + n.addr + ";transport=ws>\r\nContent-Length: 0\r\n\r\n"
		if err := wsutil.WriteServerText(c, []byte(res)); err != nil {
			return
		}
	}
}

// hangUp sends the node's own BYE in the last dialog, over the WebSocket
// the INVITE came on, routed by its Record-Route (RFC 3261 §12.1.1: the
// callee's route set is the Record-Route in order), and returns the answer.
func (n *wsNode) hangUp() (sipMsg, error) {
	n.mu.Lock()
	inv, c := n.invite, n.conn
	n.mu.Unlock()
	if c == nil {
		return sipMsg{}, errors.New("the node has no dialog to hang up")
	}
	target := strings.Trim(strings.SplitN(inv.Header("contact"), ";", 2)[0], "<>")
	if i := strings.Index(target, ">"); i >= 0 {
		target = target[:i]
	}
	req := "BYE " + target + " SIP/2.0\r\nVia: SIP/2.0/WS " + n.addr + ";branch=z9hG4bKwsbye" + svcTag() + "\r\n"
	for _, rr := range inv.hdr["record-route"] {
		for _, r := range strings.Split(rr, ",") {
			req += "Route: " + strings.TrimSpace(r) + "\r\n"
		}
	}
	req += "From: " + inv.Header("to") + ";tag=wsnode\r\nTo: " + inv.Header("from") + "\r\nCall-ID: " + inv.CallID() +
		"\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if err := wsutil.WriteServerText(c, []byte(req)); err != nil {
		return sipMsg{}, err
	}
	select {
	case m := <-n.answers:
		return m, nil
	case <-time.After(5 * time.Second):
		return sipMsg{}, errors.New("no answer to the node's BYE")
	}
}

func (n *wsNode) requests(method string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, l := range n.got {
		if strings.HasPrefix(l, method+" ") {
			out = append(out, l)
		}
	}
	return out
}

// Issue 10 item 5: WebSocket toward nodes. A node whose record says ws
// (or wss, verified against node_tls_ca) is probed and called over a
// WebSocket that sipedge dials; the Record-Route toward it names
// sipedge's own ws (wss) listener, where its in-dialog requests come
// back, and a caller over UDP gets INVITE, ACK and BYE through; the
// node's own BYE, over the WebSocket, reaches the caller and the caller's
// 200 gets back to the node.
func TestTransport2_CallsReachAWebSocketNode(t *testing.T) {
	for _, tp := range []string{"ws", "wss"} {
		t.Run(tp, func(t *testing.T) {
			e := newEnv(t)
			cert, key := selfSigned(t, t.TempDir(), "node.example")
			var conf *tls.Config
			if tp == "wss" {
				pair, err := tls.LoadX509KeyPair(cert, key)
				if err != nil {
					t.Fatal(err)
				}
				conf = &tls.Config{Certificates: []tls.Certificate{pair}}
			}
			node := startWSNode(t, conf)
			e.registerNode("w1", node.addr)
			if err := e.rdb.HSet(context.Background(), "sipedge:node:w1", "transport", tp).Err(); err != nil {
				t.Fatal(err)
			}
			edgeCert, edgeKey := selfSigned(t, t.TempDir(), "edge.example")
			listener := loopback(freePort(t))
			s := e.startSipedge("W", "--"+tp+"-listen", listener, "--tls-cert", edgeCert, "--tls-key", edgeKey, "--node-tls-ca", cert)
			eventually(t, 5*time.Second, "OPTIONS probes over "+tp, func() string {
				if n := len(node.requests("OPTIONS")); n < 2 {
					return strconv.Itoa(n) + " probes"
				}
				return ""
			})
			s.waitRing(t, 5*time.Second, "w1")
			node.mu.Lock()
			probeVia := node.vias["OPTIONS"]
			node.mu.Unlock()
			if !strings.HasPrefix(probeVia, "SIP/2.0/"+strings.ToUpper(tp)+" "+listener+";") {
				t.Errorf("probe Via %q, want it to name sipedge's %s listener %s", probeVia, tp, listener)
			}

			link := udpLink(t, "127.0.0.1:0", s.sipAddr())
			ok := link.call(t, s.sipAddr(), "wsnode"+svcTag())
			rr := recordRouteLines(ok)
			if len(rr) != 2 || !strings.HasPrefix(rr[0], "<sip:"+listener+";transport="+tp+";lr;") || !strings.Contains(rr[1], ";transport=udp;lr") {
				t.Errorf("Record-Route %q: want %s (%s) toward the node on top, udp toward the caller", rr, tp, listener)
			}
			eventually(t, 3*time.Second, "node got INVITE, ACK and BYE", func() string {
				for _, m := range []string{"INVITE", "ACK", "BYE"} {
					if len(node.requests(m)) != 1 {
						return m + ": " + strconv.Itoa(len(node.requests(m)))
					}
				}
				return ""
			})
			if got := node.conns.Load(); got != 1 {
				t.Errorf("node accepted %d WebSocket connections, want probes and the call on one", got)
			}

			// The node hangs up a second call: its BYE over the WebSocket
			// reaches the caller (UDP), whose 200 gets back to the node.
			callID := "wsbye-" + svcTag()
			inv := "INVITE sip:wsbye@" + s.sipAddr() + " SIP/2.0\r\nVia: SIP/2.0/UDP " + link.addr + ";branch=z9hG4bKwi" + svcTag() + ";rport\r\n" +
				"From: <sip:alice@example.com>;tag=a7\r\nTo: <sip:wsbye@example.com>\r\nCall-ID: " + callID + "\r\nCSeq: 1 INVITE\r\n" +
				"Contact: <sip:alice@" + link.addr + ">\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
			if err := link.send(inv); err != nil {
				t.Fatal(err)
			}
			ok = link.waitFinal(t, "INVITE")
			res, err := parseSIPResponse([]byte(ok))
			if err != nil || !strings.HasPrefix(ok, "SIP/2.0 200") {
				t.Fatalf("second INVITE: %v %s", err, ok)
			}
			rr = recordRouteLines(ok)
			routes := ""
			for i := len(rr) - 1; i >= 0; i-- {
				routes += "Route: " + rr[i] + "\r\n"
			}
			contact := strings.Trim(strings.Split(res.Header("contact"), ";")[0], "<>")
			ack := "ACK " + contact + " SIP/2.0\r\nVia: SIP/2.0/UDP " + link.addr + ";branch=z9hG4bKwa" + svcTag() + ";rport\r\n" +
				routes + "From: <sip:alice@example.com>;tag=a7\r\nTo: " + res.Header("to") + "\r\nCall-ID: " + callID + "\r\n" +
				"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
			if err := link.send(ack); err != nil {
				t.Fatal(err)
			}
			type answer struct {
				m   sipMsg
				err error
			}
			answered := make(chan answer, 1)
			go func() { m, err := node.hangUp(); answered <- answer{m, err} }()
			var bye string
			for bye == "" {
				m, err := link.recv()
				if err != nil {
					t.Fatalf("waiting for the node's BYE at the caller: %v", err)
				}
				if strings.HasPrefix(m, "BYE ") {
					bye = m
				}
			}
			var hdrs string
			for _, line := range strings.Split(bye, "\r\n") {
				k, _, _ := strings.Cut(line, ":")
				switch strings.ToLower(strings.TrimSpace(k)) {
				case "via", "v", "from", "f", "to", "t", "call-id", "i", "cseq":
					hdrs += line + "\r\n"
				}
			}
			if err := link.send("SIP/2.0 200 OK\r\n" + hdrs + "Content-Length: 0\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			if a := <-answered; a.err != nil || a.m.Code != 200 {
				t.Errorf("the node's BYE: %v, answered %q; want the caller's 200", a.err, a.m.First)
			}
		})
	}
}
