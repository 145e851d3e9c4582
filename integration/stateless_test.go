package integration

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Issue 9 (CPU per 503 reject): a deserviced instance answers new dialogs
// statelessly (README "Stateless rejects"). Through the real binary: no
// 100 Trying, a retransmission gets the identical answer, the ACK of it is
// absorbed (no node ever sees it), REGISTER and SUBSCRIBE alike, and the
// in-dialog requests of calls set up before still pass.

// rawExchange sends req from conn and returns every datagram that came
// back within wait, in order.
func rawExchange(t *testing.T, conn net.Conn, req string, wait time.Duration) [][]byte {
	t.Helper()
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	buf := make([]byte, 65535)
	deadline := time.Now().Add(wait)
	for {
		_ = conn.SetReadDeadline(deadline)
		n, err := conn.Read(buf)
		if err != nil {
			return out
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

func TestStateless_DeservicedInstance_RetransmissionsSameAnswer_AckNeverForwarded(t *testing.T) {
	c := newCluster(t, twoInstances, []string{"n1"})
	a := c.inst[0]
	c.writeSettings("retry_after", "23")

	const heldCalls = 2
	held := startUAC(t, "held-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("sl-held", heldCalls)...), Rate: 20, Hold: 4 * time.Second})
	a.waitInstance(t, 5*time.Second, "calls established", func(d svcStatusDoc) string {
		if d.Instance.Dialogs != heldCalls {
			return fmt.Sprintf("%d dialogs", d.Instance.Dialogs)
		}
		return ""
	})
	c.writeProfile("maint", "srvA", "deservice")
	waitDeserviced(t, a, false)

	conn, err := net.Dial("udp", a.sipAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	var rejectedIDs []string
	for _, method := range []string{"INVITE", "REGISTER", "SUBSCRIBE"} {
		callID, branch, tag := "sl-"+method+"-"+svcTag(), svcTag(), svcTag()
		rejectedIDs = append(rejectedIDs, callID)
		req := newDialogRequest(method, a.sipAddr(), local, "sl-"+strings.ToLower(method), callID, branch, tag)
		first := rawExchange(t, conn, req, 300*time.Millisecond)
		if len(first) != 1 {
			t.Fatalf("%s: %d datagrams back, want the 503 alone (no 100 Trying):\n%s", method, len(first), bytes.Join(first, []byte("\n---\n")))
		}
		ans, err := parseSIPResponse(first[0])
		if err != nil || ans.Code != 503 || ans.Header("retry-after") != "23" || ans.CallID != callID {
			t.Fatalf("%s: answer %+v %v, want 503 with Retry-After 23", method, ans, err)
		}
		if !strings.Contains(ans.Header("to"), ";tag=sl") {
			t.Errorf("%s: To %q without the stateless tag", method, ans.Header("to"))
		}
		again := rawExchange(t, conn, req, 300*time.Millisecond)
		if len(again) != 1 || !bytes.Equal(again[0], first[0]) {
			t.Errorf("%s retransmitted: got %q, want the identical answer %q", method, again, first[0])
		}
		if method == "INVITE" {
			ack := "ACK sip:sl-invite@" + a.sipAddr() + " SIP/2.0\r\n" +
				"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK" + branch + ";rport\r\n" +
				"From: <sip:svc-test@127.0.0.1>;tag=" + tag + "\r\n" +
				"To: " + ans.Header("to") + "\r\n" +
				"Call-ID: " + callID + "\r\n" +
				"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
			for i := 0; i < 2; i++ {
				if back := rawExchange(t, conn, ack, 100*time.Millisecond); len(back) != 0 {
					t.Errorf("the ACK got an answer: %q", back)
				}
			}
		}
	}
	eventually(t, 3*time.Second, "ACKs absorbed", func() string {
		if got := a.metric(t, "sipedge_sip_stateless_acks_total", nil); got != 2 {
			return fmt.Sprintf("%v ACKs absorbed", got)
		}
		return ""
	})
	if got := a.metric(t, "sipedge_sip_stateless_answers_total", nil); got != 6 {
		t.Errorf("stateless answers %v, want 6 (three requests, each twice)", got)
	}
	// Each answer is a rejection decided by admission: counted and logged.
	if got := a.metric(t, "sipedge_admission_rejects_total", map[string]string{"reason": causeDeserviced}); got != 6 {
		t.Errorf("sipedge_admission_rejects_total{reason=%q} = %v, want 6", causeDeserviced, got)
	}
	logged := map[string]bool{}
	for _, l := range a.logLines("Participant failed to join conference") {
		if id, _ := l["call_id"].(string); l["reason"] == reasonMaintenance {
			logged[id] = true
		}
	}
	for _, id := range rejectedIDs {
		if !logged[id] {
			t.Errorf("rejection of %s not logged with reason %q", id, reasonMaintenance)
		}
	}

	// The calls set up before the deservice end normally: their BYEs pass.
	res := held.wait()
	res.requireAllSucceeded(t, heldCalls)
	byes := c.received(t, "BYE")
	for _, id := range res.callIDs("INVITE") {
		if _, ok := byes[id]; !ok {
			t.Errorf("held call %s: its BYE never reached a node", id)
		}
	}
	acks := c.received(t, "ACK")
	invites := c.received(t, "INVITE")
	for _, id := range rejectedIDs {
		if _, ok := acks[id]; ok {
			t.Errorf("the ACK of the stateless 503 to %s reached a node", id)
		}
		if _, ok := invites[id]; ok {
			t.Errorf("the rejected INVITE %s reached a node", id)
		}
	}
	if len(acks) != heldCalls {
		t.Errorf("nodes received %d ACKs, want the %d of the held calls", len(acks), heldCalls)
	}
}

// With several listen addresses a stateless answer leaves from the
// address the request came to (the caller knows only that one): here a
// node-less instance on 127.0.0.1:P and 127.0.0.2:P answers each INVITE
// 503 from the address called.
func TestStateless_AnswerLeavesFromTheAddressCalled(t *testing.T) {
	e := newEnv(t)
	port := strconv.Itoa(freePort(t))
	first, second := "127.0.0.1:"+port, "127.0.0.2:"+port
	s := e.startSipedge("SL", "--listen", first+","+second, "--advertise", first)
	s.waitReadyz(t, 5*time.Second, 200)
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 65535)
	for _, to := range []string{first, second} {
		ra, _ := net.ResolveUDPAddr("udp", to)
		req := newDialogRequest("INVITE", to, c.LocalAddr().String(), "sl-listen", "sl-listen-"+svcTag(), svcTag(), svcTag())
		if _, err := c.WriteTo([]byte(req), ra); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("INVITE to %s: no answer: %v", to, err)
		}
		if ans, err := parseSIPResponse(buf[:n]); err != nil || ans.Code != 503 {
			t.Fatalf("INVITE to %s: %+v %v, want 503 (no node)", to, ans, err)
		}
		if from.String() != ra.String() {
			t.Errorf("INVITE to %s answered from %s", to, from)
		}
	}
	if got := s.metric(t, "sipedge_sip_stateless_answers_total", nil); got != 2 {
		t.Errorf("stateless answers %v, want 2 (the 503s were not the stateless path's)", got)
	}
}
