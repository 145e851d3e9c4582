package integration

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// Issue 9 item 4: a finished transaction keeps only its key and the last
// response's bytes. Through the real binary: retransmissions of a BYE
// answered 200 get the same bytes again and never reach the node again; a
// retransmitted INVITE after its 2xx is dropped; the node's 2xx
// retransmission after sipedge ended its client transaction is still
// relayed to the caller; a 2xx with a foreign top Via is not relayed.

// startFinNode is a media node on one UDP socket: 200 to OPTIONS, INVITE
// (sent twice, the second after again, as a UAS retransmits its 2xx
// until the ACK) and BYE.
func startFinNode(t *testing.T, again time.Duration) *rawUAS {
	t.Helper()
	return startRawUAS(t, func(u *rawUAS, m rawRequest, src *net.UDPAddr) {
		if m.method == "ACK" {
			return
		}
		answer := []byte(m.answer(200, "OK", "sip:node@"+u.addr()))
		_, _ = u.conn.WriteToUDP(answer, src)
		if m.method == "INVITE" && again > 0 {
			time.AfterFunc(again, func() { _, _ = u.conn.WriteToUDP(answer, src) })
		}
	})
}

// finCaller is a caller on a raw UDP socket.
type finCaller struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
	buf  []byte
}

func newFinCaller(t *testing.T, target string) *finCaller {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &finCaller{t: t, conn: conn, to: to, buf: make([]byte, 65535)}
}

func (c *finCaller) local() string { return c.conn.LocalAddr().String() }

func (c *finCaller) send(msg string) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP([]byte(msg), c.to); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next response starting with prefix within d (nil when
// none came), skipping others (100 Trying).
func (c *finCaller) next(prefix string, d time.Duration) []byte {
	deadline := time.Now().Add(d)
	for {
		_ = c.conn.SetReadDeadline(deadline)
		n, _, err := c.conn.ReadFromUDP(c.buf)
		if err != nil {
			return nil
		}
		if bytes.HasPrefix(c.buf[:n], []byte(prefix)) {
			return append([]byte(nil), c.buf[:n]...)
		}
	}
}

func TestFinished_RetransmissionsAbsorbedAndRelayedThroughTheBinary(t *testing.T) {
	e := newEnv(t)
	node := startFinNode(t, 600*time.Millisecond)
	e.registerNode("n1", node.addr())
	s := e.startSipedge("a", "--media-ports=")
	s.waitRing(t, 10*time.Second, "n1")
	c := newFinCaller(t, s.sipAddr())

	// INVITE, its 200, then the same INVITE twice: the caller missed the 2xx.
	id, tag, br := "fin-"+svcTag(), "f"+svcTag(), "z9hG4bK"+svcTag()
	ruri := "sip:fin1@" + s.sipAddr()
	invite := "INVITE " + ruri + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + c.local() + ";branch=" + br + ";rport\r\n" +
		"From: <sip:caller@127.0.0.1>;tag=" + tag + "\r\nTo: <" + ruri + ">\r\n" +
		"Call-ID: " + id + "\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@" + c.local() + ">\r\n" +
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	c.send(invite)
	ok := c.next("SIP/2.0 200", 5*time.Second)
	if ok == nil {
		t.Fatalf("no 200 to the INVITE\n%s", s.proc.log())
	}
	c.send(invite)
	c.send(invite)

	// The node retransmits its 200 600 ms later: sipedge has ended the
	// client transaction by then and relays it by its branch.
	again := c.next("SIP/2.0 200", 3*time.Second)
	if again == nil {
		t.Fatal("the node's 2xx retransmission was not relayed")
	}
	if !strings.Contains(string(again), "branch="+br) || strings.Count(string(again), "Via:") != 1 {
		t.Fatalf("relayed 2xx does not carry only the caller's Via:\n%s", again)
	}

	// ACK, BYE, 200; then the BYE three times more.
	a, err := parseSIPResponse(ok)
	if err != nil {
		t.Fatal(err)
	}
	var routes strings.Builder
	var rr []string
	for _, v := range a.hdr["record-route"] {
		rr = append(rr, splitRoutes(v)...)
	}
	for i := len(rr) - 1; i >= 0; i-- {
		routes.WriteString("Route: " + rr[i] + "\r\n")
	}
	target := ruri
	if ct := a.Header("contact"); strings.Contains(ct, "<") {
		target = ct[strings.Index(ct, "<")+1 : strings.Index(ct, ">")]
	}
	inDialog := func(method string, cseq string) string {
		return method + " " + target + " SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP " + c.local() + ";branch=z9hG4bK" + svcTag() + ";rport\r\n" + routes.String() +
			"From: <sip:caller@127.0.0.1>;tag=" + tag + "\r\nTo: " + a.Header("to") + "\r\n" +
			"Call-ID: " + id + "\r\nCSeq: " + cseq + "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	}
	c.send(inDialog("ACK", "1 ACK"))
	bye := inDialog("BYE", "2 BYE")
	c.send(bye)
	first := c.next("SIP/2.0 200", 5*time.Second)
	if first == nil {
		t.Fatal("no 200 to the BYE")
	}
	for i := 1; i <= 3; i++ {
		c.send(bye)
		got := c.next("SIP/2.0 ", 3*time.Second)
		if !bytes.Equal(got, first) {
			t.Fatalf("retransmitted BYE %d answered\n%s\nthe first answer was\n%s", i, got, first)
		}
	}

	// A 2xx from the node with a foreign top Via is not relayed.
	forged := "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP " + c.local() + ";branch=" + br + ";rport\r\n" +
		"From: <sip:caller@127.0.0.1>;tag=" + tag + "\r\nTo: <" + ruri + ">;tag=x\r\n" +
		"Call-ID: " + id + "\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
	if _, err := node.conn.WriteToUDP([]byte(forged), &net.UDPAddr{IP: c.to.IP, Port: c.to.Port}); err != nil {
		t.Fatal(err)
	}
	if got := c.next("SIP/2.0", 500*time.Millisecond); got != nil {
		t.Fatalf("a response sipedge cannot match was relayed:\n%s", got)
	}

	if n := node.count("INVITE"); n != 1 {
		t.Errorf("the node read %d INVITEs, want 1", n)
	}
	if n := node.count("BYE"); n != 1 {
		t.Errorf("the node read %d BYEs, want 1", n)
	}
	eventually(t, 3*time.Second, "metrics of absorbed and relayed retransmissions", func() string {
		resent := s.metricOr0(t, "sipedge_sip_retransmissions_absorbed_total", map[string]string{"action": "resent"})
		dropped := s.metricOr0(t, "sipedge_sip_retransmissions_absorbed_total", map[string]string{"action": "dropped"})
		relayed := s.metricOr0(t, "sipedge_sip_2xx_retransmissions_relayed_total", nil)
		notOurs := s.metricOr0(t, "sipedge_sip_unmatched_responses_total", map[string]string{"reason": "not_ours"})
		if resent != 3 || dropped != 2 || relayed != 1 || notOurs != 1 {
			return fmt.Sprintf("resent %v, dropped %v, relayed %v, not_ours %v; want 3, 2, 1, 1", resent, dropped, relayed, notOurs)
		}
		return ""
	})
}
