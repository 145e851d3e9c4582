package integration

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// sipp (3.6.1, and its master branch) finds a response's CSeq method with
// strstr(msg, "CSeq"): the first "CSeq" anywhere in the message, not the
// header. sipedge's Record-Route carries its route state as base64url
// (se=, ~128 random characters), and a response to INVITE carries that
// Record-Route above its CSeq: about one call in 136 000 (125 positions,
// 64^-4 each) has "CSeq" inside the token. sipp then reads a garbage
// method, the 180 matches no <recv> of the scenario, and sipp aborts the
// call with a CANCEL (the one failed call of 1000 in
// TestRelay_1000Calls_PortsReturnToZero). The token is a legal
// uri-parameter value (RFC 3261 §25.1), so the callers' scenarios match
// responses by transaction (start_txn / response_txn: the top Via's
// branch) instead of by CSeq method.
func TestSippCallers_MatchResponsesWhateverTheRecordRouteHolds(t *testing.T) {
	// A route token shaped like sipedge's, with "CSeq" in it.
	const token = "BFhJXOXkV1g9eQbQqdFuhNBr2wKe4sHVXUv0jkApbViZ2w0oueJMOzIRK1E_lE8oiDrwCSeqT4sELabb8VgVj8OBssiGgEDVyerml7vZDmJDlyAtjLDoPnNmwL8Fsog"
	for _, sc := range []string{"uac_call.xml", "uac_call_bigsdp.xml", "uac_failover.xml", "uac_call_until_drain_bye.xml"} {
		t.Run(sc, func(t *testing.T) {
			u := startRouteUAS(t, token)
			res := runUAC(t, strings.TrimSuffix(sc, ".xml"), uac{Scenario: sc, Target: u.addr(),
				Rows: callRows(u.addr(), ids("cseq", 3)...), Rate: 10, Timeout: 20 * time.Second})
			res.requireAllSucceeded(t, 3)
			if n := u.count("INVITE"); n != 3 {
				t.Fatalf("the UAS got %d INVITEs, want 3", n)
			}
			if n := u.count("CANCEL"); n != 0 {
				t.Fatalf("sipp sent %d CANCELs (a 180 it did not match)", n)
			}
		})
	}
}

// startRouteUAS stands where sipedge and a node would: it answers each INVITE
// 100, 180 and 200, the 180 and the 200 with a Record-Route holding token
// as its se= parameter, as sipedge's does. A caller of
// uac_call_until_drain_bye.xml (From tag [pid]D[n]) gets a BYE with a
// drain-timeout Reason after its ACK, as sipedge would send it.
func startRouteUAS(t testing.TB, token string) *rawUAS {
	t.Helper()
	var rr string
	return startRawUAS(t, func(u *rawUAS, m rawRequest, src *net.UDPAddr) {
		if rr == "" {
			rr = "Record-Route: <sip:" + u.addr() + ";transport=udp;lr;se=" + token + ">"
		}
		m.lines = append([]string{rr}, m.lines...) // answer copies it, above CSeq
		switch m.method {
		case "INVITE":
			for _, code := range []int{100, 180} {
				_, _ = u.conn.WriteToUDP([]byte(m.answer(code, reasonFor(code), "sip:uas@"+u.addr())), src)
			}
			sdp := "v=0\r\no=uas 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
			ok := strings.Replace(m.answer(200, "OK", "sip:uas@"+u.addr()), "Content-Length: 0\r\n\r\n",
				fmt.Sprintf("Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", len(sdp), sdp), 1)
			_, _ = u.conn.WriteToUDP([]byte(ok), src)
		case "ACK":
			if _, tag, _ := strings.Cut(m.header("from"), ";tag="); strings.Contains(tag, "D") {
				_, _ = u.conn.WriteToUDP([]byte(drainBye(m, u.addr())), src)
			}
		case "BYE", "CANCEL":
			_, _ = u.conn.WriteToUDP([]byte(m.answer(200, "OK", "sip:uas@"+u.addr())), src)
		}
	})
}

func reasonFor(code int) string {
	switch code {
	case 100:
		return "Trying"
	case 180:
		return "Ringing"
	}
	return "OK"
}

// drainBye is the BYE sipedge sends a caller when its node's drain outlives
// drain_timeout, built from the caller's ACK.
func drainBye(ack rawRequest, local string) string {
	contact := ack.header("contact")
	if i, j := strings.Index(contact, "<"), strings.Index(contact, ">"); i >= 0 && j > i {
		contact = contact[i+1 : j]
	}
	return "BYE " + contact + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK" + svcTag() + "\r\n" +
		"From: " + ack.header("to") + "\r\n" +
		"To: " + ack.header("from") + "\r\n" +
		"Call-ID: " + ack.header("call-id") + "\r\n" +
		"CSeq: 1 BYE\r\n" +
		"Reason: SIP;cause=503;text=\"drain timeout\"\r\n" +
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

// TestSippNode_AbsorbsInviteRetransmittedAfterItsAnswer: a loaded sipedge
// may read a node's 100/180/200 more than 500 ms after they were sent, and
// its client transaction has then retransmitted the INVITE (Timer A, RFC
// 3261 §17.1.1.2). The node has answered already; as a UAS it absorbs the
// retransmission (RFC 6026 §7.1) and the call goes on. The sipp node used
// to abort the call on it, so its ACK and BYE went unanswered (the failed
// call of TestRelay_1000Calls_PortsReturnToZero on a loaded machine).
func TestSippNode_AbsorbsInviteRetransmittedAfterItsAnswer(t *testing.T) {
	n := startSippNode(t, "n1")
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	node, err := net.ResolveUDPAddr("udp", n.addr())
	if err != nil {
		t.Fatal(err)
	}
	local := conn.LocalAddr().String()
	send := func(msg string) {
		if _, err := conn.WriteToUDP([]byte(msg), node); err != nil {
			t.Fatal(err)
		}
	}
	// await reads until a final response to method; "" after timeout.
	await := func(method string, timeout time.Duration) string {
		buf := make([]byte, 65535)
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
		for {
			k, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				return ""
			}
			a, err := parseSIPResponse(buf[:k])
			if err == nil && a.Code >= 200 && strings.HasSuffix(a.Header("cseq"), method) {
				return a.Header("to")
			}
		}
	}
	const id = "retrans-after-answer"
	head := func(method, branch string, cseq int, to string) string {
		return method + " sip:conf@" + n.addr() + " SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP " + local + ";branch=" + branch + "\r\n" +
			"From: <sip:proxy@127.0.0.1>;tag=p1\r\nTo: " + to + "\r\n" +
			"Call-ID: " + id + "\r\n" + fmt.Sprintf("CSeq: %d %s\r\n", cseq, method) +
			"Contact: <sip:proxy@" + local + ">\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	}
	invite := head("INVITE", "z9hG4bK-inv1", 1, "<sip:conf@"+n.addr()+">")
	send(invite)
	to := await("INVITE", 5*time.Second)
	if to == "" {
		t.Fatal("the node did not answer the INVITE")
	}
	send(invite) // Timer A fired before the proxy read the answer
	time.Sleep(200 * time.Millisecond)
	send(head("ACK", "z9hG4bK-ack1", 1, to))
	send(head("BYE", "z9hG4bK-bye1", 2, to))
	if await("BYE", 3*time.Second) == "" {
		t.Fatalf("the node did not answer the BYE after a retransmitted INVITE\n%s", n.summary())
	}
}

// requireRingingThenAnswer fails unless, in a caller's trace, every call
// received a 180 before the first 2xx to its INVITE and no provisional
// after it: sipedge relays each INVITE's responses in the order the node
// sent them (README "Response order"; the nodes of these tests always send
// 180 then 200). A 180 lost to the 200 overtaking it inside sipgo, or a
// second 180 after the answer (a retransmitted INVITE forwarded again as a
// new call), fails it. sipp itself no longer notices either: its scenarios
// match responses by transaction, and a late 1xx of a known transaction is
// ignored.
//
// UDP may lose datagrams on a loaded machine (a starved sipp's receive
// buffer overflows), and a 1xx is never retransmitted: a call whose first
// 2xx reached the caller only after its node had retransmitted it (so the
// first was lost or held up on the way) is not counted, only logged.
func requireRingingThenAnswer(t testing.TB, r uacResult, nodes ...*sippNode) {
	t.Helper()
	type call struct {
		ringing, answered, late bool
		answeredAt              string
	}
	calls := map[string]*call{}
	var order []string
	for _, m := range r.Msgs {
		if m.Sent || m.Code == 0 || !strings.HasSuffix(m.CSeq(), "INVITE") {
			continue
		}
		c := calls[m.CallID()]
		if c == nil {
			c = &call{}
			calls[m.CallID()] = c
			order = append(order, m.CallID())
		}
		switch {
		case m.Code >= 200 && m.Code < 300:
			if !c.answered {
				c.answered, c.answeredAt = true, m.When
			}
		case c.answered && m.Code > 100:
			c.late = true
		case m.Code == 180:
			c.ringing = true
		}
	}
	// When each node sent its second 2xx to an INVITE (a retransmission).
	resent := map[string]string{}
	for _, n := range nodes {
		msgs, err := parseTrace(n.msgFile)
		if err != nil {
			t.Fatalf("node %s trace: %v", n.name, err)
		}
		sent := map[string]int{}
		for _, m := range msgs {
			if m.Sent && m.Code >= 200 && m.Code < 300 && strings.HasSuffix(m.CSeq(), "INVITE") {
				if sent[m.CallID()]++; sent[m.CallID()] == 2 {
					resent[m.CallID()] = m.When
				}
			}
		}
	}
	var lost, late, inTransit []string
	for _, id := range order {
		c := calls[id]
		if c.answered && !c.ringing {
			if at, ok := resent[id]; ok && c.answeredAt >= at {
				inTransit = append(inTransit, id)
			} else {
				lost = append(lost, id)
			}
		}
		if c.late {
			late = append(late, id)
		}
	}
	if len(inTransit) > 0 {
		t.Logf("uac %s: %d calls without a 180 whose first 200 was lost on the way too (the node retransmitted it first), not counted: %v",
			r.Name, len(inTransit), head(inTransit, 5))
	}
	if len(lost) > 0 || len(late) > 0 {
		t.Errorf("uac %s: %d calls answered without their 180 first (e.g. %v), %d got a provisional after the answer (e.g. %v)",
			r.Name, len(lost), head(lost, 5), len(late), head(late, 5))
	}
}

func head(s []string, n int) []string { return s[:min(n, len(s))] }
