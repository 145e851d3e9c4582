package integration

import (
	"context"
	be "encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/internal/nodeauth"
)

// Issue 8 item 4: a UDP datagram with a media node's exact source address
// (forged with a raw socket) and X-Sipedge-Conference makes sipedge send
// nothing to the IP literal in its Request-URI. The same datagram with a
// valid X-Sipedge-Auth does reach it (so the spoofing itself works and the
// proof is what decides), and so does the node's own signed dial.
func TestTrust_SpoofedNodeCallSendsNothing(t *testing.T) {
	if !canRawSocket() {
		t.Skip("needs root for a raw IP socket (IP_HDRINCL)")
	}
	e := newEnv(t)
	se := e.startSipedge("A")
	_, nodeAddr := e.startConfnode("cn1", "--proxy", se.sipAddr())
	se.waitRing(t, 10*time.Second, "cn1")
	node := netip.MustParseAddrPort(nodeAddr)
	edge := netip.MustParseAddrPort(se.sipAddr())

	t.Run("unsigned spoofed datagram: nothing sent", func(t *testing.T) {
		victim := listenVictim(t)
		refused := se.metricOr0(t, "sipedge_sip_node_calls_refused_total", map[string]string{"reason": "unproven"})
		missing := se.metricOr0(t, "sipedge_sip_node_auth_failures_total", map[string]string{"reason": "missing"})
		sendSpoofedUDP(t, node, edge, []byte(spoofedInvite(node, edge, victim.addr(), "spoof-1", "")))
		// Nothing reaches the target...
		if got := victim.readFor(2 * time.Second); len(got) != 0 {
			t.Fatalf("the forged call's target got %d datagrams, first:\n%s", len(got), got[0])
		}
		// ...because sipedge refused it (it did get the datagram).
		eventually(t, 5*time.Second, "forged node call counted as refused", func() string {
			r := se.metricOr0(t, "sipedge_sip_node_calls_refused_total", map[string]string{"reason": "unproven"})
			m := se.metricOr0(t, "sipedge_sip_node_auth_failures_total", map[string]string{"reason": "missing"})
			if r != refused+1 || m != missing+1 {
				return fmt.Sprintf("node_calls_refused{unproven} %v→%v, node_auth_failures{missing} %v→%v", refused, r, missing, m)
			}
			return ""
		})
	})

	t.Run("spoofed datagram signed with another secret: nothing sent", func(t *testing.T) {
		victim := listenVictim(t)
		bad := se.metricOr0(t, "sipedge_sip_node_auth_failures_total", map[string]string{"reason": "bad_mac"})
		sendSpoofedUDP(t, node, edge, []byte(spoofedInvite(node, edge, victim.addr(), "spoof-2", "guessed-secret")))
		if got := victim.readFor(2 * time.Second); len(got) != 0 {
			t.Fatalf("the forged call's target got %d datagrams, first:\n%s", len(got), got[0])
		}
		eventually(t, 5*time.Second, "bad proof counted", func() string {
			if v := se.metricOr0(t, "sipedge_sip_node_auth_failures_total", map[string]string{"reason": "bad_mac"}); v != bad+1 {
				return fmt.Sprintf("node_auth_failures{bad_mac} %v→%v", bad, v)
			}
			return ""
		})
	})

	secret, err := e.rdb.Get(context.Background(), "sipedge:node_secret").Result()
	if err != nil || secret == "" {
		t.Fatalf("sipedge:node_secret: %q, %v", secret, err)
	}

	t.Run("spoofed datagram with a valid proof: forwarded (control)", func(t *testing.T) {
		victim := listenVictim(t)
		sendSpoofedUDP(t, node, edge, []byte(spoofedInvite(node, edge, victim.addr(), "spoof-3", secret)))
		inv := victim.expectInvite(t, 5*time.Second)
		if strings.Contains(strings.ToLower(inv), "x-sipedge-") {
			t.Errorf("callee got X-Sipedge headers:\n%s", inv)
		}
	})

	t.Run("confnode's own signed dial works", func(t *testing.T) {
		victim := listenVictim(t)
		entry := fmt.Sprintf(`{"conf":"t8dial","uri":"sip:bob@%s","kind":"adp","role":"host","id":"d1"}`, victim.addr())
		if err := e.rdb.LPush(context.Background(), "sipedge:dial:cn1", entry).Err(); err != nil {
			t.Fatal(err)
		}
		inv := victim.expectInvite(t, 10*time.Second)
		if !strings.HasPrefix(inv, "INVITE sip:bob@"+victim.addr()) {
			t.Errorf("callee got\n%s", inv)
		}
		if strings.Contains(strings.ToLower(inv), "x-sipedge-") {
			t.Errorf("callee got X-Sipedge headers:\n%s", inv)
		}
	})
}

// Issue 8 item 8: a dialog set up with route secret A still ends after the
// secrets rotated to B (A kept as previous), through another instance; a
// route made with a secret neither instance knows gets 404 and is counted.
func TestTrust_RouteSecretRotation_ByeStillRoutes(t *testing.T) {
	e := newEnv(t)
	n1 := e.startNode("n1")
	a := e.startSipedge("A")
	b := e.startSipedge("B")
	a.waitRing(t, 10*time.Second, "n1")
	b.waitRing(t, 10*time.Second, "n1")
	secretA, err := e.rdb.Get(context.Background(), "sipedge:route_secret").Result()
	if err != nil || secretA == "" {
		t.Fatalf("sipedge:route_secret: %q, %v", secretA, err)
	}

	// INVITE through A with secret A; the call holds while the secret
	// rotates; the BYE goes through B.
	_, bport, _ := net.SplitHostPort(b.sipAddr())
	run := startUAC(t, "rot", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: [][]string{{"t8rot", "127.0.0.1", bport}}, Hold: 8 * time.Second})
	eventually(t, 10*time.Second, "call answered and ACKed at the node", func() string {
		if len(n1.received(t, "ACK")) == 0 {
			return "no ACK at the node yet"
		}
		return ""
	})
	e.ctlOK("route-secret", "rotate", "--settle", "1500ms")
	secretB, _ := e.rdb.Get(context.Background(), "sipedge:route_secret").Result()
	prev, _ := e.rdb.Get(context.Background(), "sipedge:route_secret_prev").Result()
	if secretB == secretA || secretB == "" || prev != secretA {
		t.Fatalf("after rotate: current changed=%v, prev is A=%v", secretB != secretA, prev == secretA)
	}
	for _, s := range []*sipedge{a, b} {
		s := s
		eventually(t, 5*time.Second, "instance "+s.name+" follows the rotation", func() string {
			if len(s.logLines("route secrets changed")) < 2 { // staged next, then promoted
				return "no 'route secrets changed' twice in the log"
			}
			return ""
		})
	}
	res := run.wait()
	res.requireAllSucceeded(t, 1)
	if v := b.metricOr0(t, "sipedge_sip_route_old_secret_total", nil); v < 1 {
		t.Errorf("B's route_old_secret_total = %v: the BYE was not opened with the previous secret", v)
	}

	// A new dialog through A after the rotation: its route is made with B
	// alone, so it routes even once A is dropped.
	e.ctlOK("route-secret", "drop-prev")
	time.Sleep(1500 * time.Millisecond) // both instances poll every second
	res = runUAC(t, "after", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: [][]string{{"t8after", "127.0.0.1", bport}}, Hold: 100 * time.Millisecond})
	res.requireAllSucceeded(t, 1)

	// An instance with a secret of its own (configured, known to nobody
	// else) makes a route A and B refuse: the BYE through B gets 404.
	c := e.startSipedge("C", "--route-secret", "nobody-else-knows-this")
	c.waitRing(t, 10*time.Second, "n1")
	bad := b.metricOr0(t, "sipedge_sip_bad_routes_total", nil)
	res = runUAC(t, "foreign", uac{Scenario: "uac_call.xml", Target: c.sipAddr(),
		Rows: [][]string{{"t8foreign", "127.0.0.1", bport}}, Hold: 100 * time.Millisecond, Timeout: 20 * time.Second})
	if res.Successful != 0 || res.Failed != 1 {
		t.Fatalf("call with a foreign route: %d successful, %d failed; want its BYE refused", res.Successful, res.Failed)
	}
	got404 := false
	for _, m := range res.Msgs {
		if !m.Sent && m.Code == 404 && strings.Contains(m.CSeq(), "BYE") {
			got404 = true
		}
	}
	if !got404 {
		t.Errorf("the BYE with a foreign route got no 404")
	}
	if v := b.metricOr0(t, "sipedge_sip_bad_routes_total", nil); v < bad+1 {
		t.Errorf("B's bad_routes_total %v→%v, want it counted", bad, v)
	}
}

// ---------------------------------------------------------------------------
// helpers

// canRawSocket reports whether this process may open a raw IP socket.
func canRawSocket() bool {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return false
	}
	syscall.Close(fd)
	return true
}

// sendSpoofedUDP sends payload as one UDP datagram from src to dst, with an
// IPv4 header written by hand (IPPROTO_RAW implies IP_HDRINCL): the kernel
// sends whatever source address the header names.
func sendSpoofedUDP(t *testing.T, src, dst netip.AddrPort, payload []byte) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	defer syscall.Close(fd)
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, syscall.IP_HDRINCL, 1); err != nil {
		t.Fatalf("IP_HDRINCL: %v", err)
	}
	pkt := make([]byte, 20+8+len(payload))
	ip := pkt[:20]
	ip[0] = 0x45 // IPv4, 5 words of header
	be.BigEndian.PutUint16(ip[2:], uint16(len(pkt)))
	be.BigEndian.PutUint16(ip[4:], 0x5e1f) // id
	ip[8] = 64                             // TTL
	ip[9] = syscall.IPPROTO_UDP
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	be.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	udp := pkt[20:28]
	be.BigEndian.PutUint16(udp[0:], src.Port())
	be.BigEndian.PutUint16(udp[2:], dst.Port())
	be.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	// UDP checksum 0: none (allowed over IPv4).
	copy(pkt[28:], payload)
	to := &syscall.SockaddrInet4{Addr: d4}
	if err := syscall.Sendto(fd, pkt, 0, to); err != nil {
		t.Fatalf("send spoofed datagram: %v", err)
	}
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// spoofedInvite is a node call as a forger writes it: from the node's
// address, through sipedge, to target. With secret it carries the
// X-Sipedge-Auth a holder of that secret computes.
func spoofedInvite(node, edge netip.AddrPort, target, callID, secret string) string {
	msg := fmt.Sprintf("INVITE sip:victim@%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s;rport\r\n"+
		"Max-Forwards: 70\r\n"+
		"Route: <sip:%s;lr>\r\n"+
		"From: <sip:t8spoof@%s>;tag=forger-%s\r\n"+
		"To: <sip:victim@%s>\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: 1 INVITE\r\n"+
		"Contact: <sip:t8spoof@%s>\r\n"+
		"X-Sipedge-Conference: t8spoof\r\n"+
		"X-Sipedge-Participant: adp\r\n"+
		"Content-Length: 0\r\n\r\n",
		target, node, callID, edge, node, callID, target, callID, node)
	if secret == "" {
		return msg
	}
	parsed, err := sip.NewParser().ParseSIP([]byte(msg))
	if err != nil {
		panic(err)
	}
	req := parsed.(*sip.Request)
	nodeauth.Sign(req, secret, time.Now())
	return strings.Replace(msg, "Content-Length: 0\r\n",
		nodeauth.Header+": "+req.GetHeader(nodeauth.Header).Value()+"\r\nContent-Length: 0\r\n", 1)
}

// victim is a UDP listener on 127.0.0.9, an address nothing in the test
// names except the forged Request-URI.
type victim struct {
	conn *net.UDPConn
}

func listenVictim(t *testing.T) *victim {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9)})
	if err != nil {
		t.Fatalf("listen on 127.0.0.9: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &victim{conn: c}
}

func (v *victim) addr() string { return v.conn.LocalAddr().String() }

// readFor returns every datagram received within d.
func (v *victim) readFor(d time.Duration) []string {
	var out []string
	buf := make([]byte, 65535)
	deadline := time.Now().Add(d)
	for {
		_ = v.conn.SetReadDeadline(deadline)
		n, _, err := v.conn.ReadFromUDP(buf)
		if err != nil {
			return out
		}
		out = append(out, string(buf[:n]))
	}
}

// expectInvite waits for an INVITE and answers it 486, so sipedge stops
// retransmitting.
func (v *victim) expectInvite(t *testing.T, within time.Duration) string {
	t.Helper()
	buf := make([]byte, 65535)
	_ = v.conn.SetReadDeadline(time.Now().Add(within))
	for {
		n, from, err := v.conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no INVITE at %s: %v", v.addr(), err)
		}
		msg := string(buf[:n])
		if !strings.HasPrefix(msg, "INVITE ") {
			continue
		}
		_, _ = v.conn.WriteToUDP([]byte(busyFor(msg)), from)
		return msg
	}
}

// busyFor is a 486 answer to req (its Vias, From, To with a tag, Call-ID
// and CSeq).
func busyFor(req string) string {
	var b strings.Builder
	b.WriteString("SIP/2.0 486 Busy Here\r\n")
	for _, line := range strings.Split(req, "\r\n") {
		name, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "via", "v", "from", "f", "call-id", "i", "cseq":
			b.WriteString(line + "\r\n")
		case "to", "t":
			b.WriteString(line + ";tag=victim\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}
