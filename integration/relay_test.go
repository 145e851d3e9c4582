package integration

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Issue 9 (relay): relay ports never outlive their calls. Calls through a
// real sipedge end in every way a node and a caller make them end (refused,
// cancelled, answered and hung up) while the SIP that follows the end
// still carries SDP: the node retransmits its 2xx after the BYE (it missed
// the ACK), the caller sends a re-INVITE behind its BYE. Before the fix
// each late SDP anchored the ended call again and its four ports were
// never freed (seen under load in TestFlood and at 750 anchored calls/s).
func TestRelayPorts_FreedWhateverWayCallsEnd(t *testing.T) {
	e := newEnv(t)
	se := e.startSipedge("A", "--media-ports", mediaPorts(t))
	node := startLateNode(t)
	e.registerNode("late", node.addr())
	se.waitRing(t, 5*time.Second, "late")

	const perWay = 5
	ways := []struct {
		conf string
		call func(c *lateCaller) error
	}{
		{"busy", (*lateCaller).refused},
		{"cancel", (*lateCaller).cancelled},
		{"answer", (*lateCaller).answeredThenReinviteAfterBye},
	}
	var wg sync.WaitGroup
	errs := make(chan error, perWay*len(ways))
	for _, w := range ways {
		for i := range perWay {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := newLateCaller(t, se.sipAddr(), w.conf+"-"+strconv.Itoa(i))
				defer c.close()
				if err := w.call(c); err != nil {
					errs <- fmt.Errorf("%s call %d: %w", w.conf, i, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	// The node's last 2xx retransmission is out; give sipedge a moment to
	// have anchored it, if it were to.
	node.waitQuiet(t, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	if got := node.late2xx.Load(); got < perWay {
		t.Fatalf("node retransmitted %d 2xx after a BYE, want >= %d: the test did not reach the path", got, perWay)
	}
	if got := se.metric(t, "sipedge_relay_ports_in_use", nil); got != 0 {
		t.Errorf("sipedge_relay_ports_in_use = %v after every call ended, want 0 (the pool full)", got)
	}
	if got := se.metricOr0(t, "sipedge_relay_streams_active", nil); got != 0 {
		t.Errorf("sipedge_relay_streams_active = %v, want 0", got)
	}
	if got := se.metricOr0(t, "sipedge_media_sdp_errors_total", map[string]string{"class": "ended"}); got < perWay {
		t.Errorf("sipedge_media_sdp_errors_total{class=ended} = %v, want >= %d (late SDP refused)", got, perWay)
	}
}

// lateNode is a SIP node on a raw UDP socket: conference "busy-*" is
// refused 486; "cancel-*" rings and answers 200 just after the CANCEL (the
// race RFC 3261 §9.1 allows); "answer-*" answers 200 with SDP and keeps
// retransmitting that 2xx for a second whatever comes (a node that missed
// the ACK), through the caller's BYE.
type lateNode struct {
	conn    *net.UDPConn
	pending sync.Map     // Call-ID -> the ringing INVITE (cancel-*)
	sending atomic.Int64 // 2xx retransmissions scheduled and not sent yet
	ended   sync.Map     // Call-ID -> a BYE was answered
	late2xx atomic.Int64 // 2xx sent after the call's BYE
	wg      sync.WaitGroup
}

func startLateNode(t *testing.T) *lateNode {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	n := &lateNode{conn: c}
	n.wg.Add(1)
	go n.serve()
	t.Cleanup(func() { c.Close(); n.wg.Wait() })
	return n
}

func (n *lateNode) addr() string { return n.conn.LocalAddr().String() }

func (n *lateNode) serve() {
	defer n.wg.Done()
	buf := make([]byte, 65535)
	for {
		k, src, err := n.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m := parseRaw(string(buf[:k]))
		switch m.Method {
		case "":
		case "ACK":
		case "INVITE":
			conf := m.RURIUser()
			switch {
			case strings.HasPrefix(conf, "busy"):
				n.send(src, n.response(m, 486, "Busy Here", false))
			case strings.HasPrefix(conf, "cancel"):
				n.pending.Store(m.CallID(), m)
				n.send(src, n.response(m, 180, "Ringing", false))
			default:
				n.answer(m, src, 5, 200*time.Millisecond)
			}
		case "CANCEL":
			n.send(src, n.response(m, 200, "OK", false))
			if inv, ok := n.pending.LoadAndDelete(m.CallID()); ok {
				n.answer(inv.(sipMsg), src, 3, 200*time.Millisecond)
			}
		case "BYE":
			n.ended.Store(m.CallID(), true)
			n.send(src, n.response(m, 200, "OK", false))
		default:
			n.send(src, n.response(m, 200, "OK", false))
		}
	}
}

// answer sends the 2xx of inv now and times more, every interval.
func (n *lateNode) answer(inv sipMsg, to *net.UDPAddr, times int, interval time.Duration) {
	res := n.response(inv, 200, "OK", true)
	n.send(to, res)
	n.sending.Add(int64(times))
	go func() {
		for range times {
			time.Sleep(interval)
			if _, ended := n.ended.Load(inv.CallID()); ended {
				n.late2xx.Add(1)
			}
			n.send(to, res)
			n.sending.Add(-1)
		}
	}()
}

func (n *lateNode) response(m sipMsg, code int, reason string, sdp bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, v := range m.hdr["via"] {
		b.WriteString("Via: " + v + "\r\n")
	}
	for _, v := range m.hdr["record-route"] {
		b.WriteString("Record-Route: " + v + "\r\n")
	}
	to := m.Header("to")
	if code > 100 && !strings.Contains(to, "tag=") {
		to += ";tag=node-" + m.CallID()
	}
	b.WriteString("From: " + m.Header("from") + "\r\nTo: " + to + "\r\nCall-ID: " + m.CallID() +
		"\r\nCSeq: " + m.CSeq() + "\r\nContact: <sip:node@" + n.addr() + ">\r\n")
	body := ""
	if sdp {
		body = "v=0\r\no=node 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
			"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	return b.String()
}

func (n *lateNode) send(to *net.UDPAddr, msg string) { _, _ = n.conn.WriteToUDP([]byte(msg), to) }

// waitQuiet waits until every scheduled 2xx retransmission is sent.
func (n *lateNode) waitQuiet(t *testing.T, within time.Duration) {
	t.Helper()
	eventually(t, within, "node's 2xx retransmissions sent", func() string {
		if k := n.sending.Load(); k > 0 {
			return fmt.Sprintf("%d to go", k)
		}
		return ""
	})
}

// lateCaller is one call's caller on its own UDP socket.
type lateCaller struct {
	t              *testing.T
	c              *net.UDPConn
	via            string // sipedge
	conf           string
	callID, tag    string
	branch, invite string
}

func newLateCaller(t *testing.T, via, conf string) *lateCaller {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	l := &lateCaller{t: t, c: c, via: via, conf: conf, callID: "late-" + conf + "-" + svcTag(), tag: svcTag(),
		branch: "z9hG4bK" + svcTag()}
	l.invite = l.request("INVITE", "sip:"+conf+"@"+via, 1, l.branch, "<sip:"+conf+"@"+via+">", nil, true)
	return l
}

func (l *lateCaller) close() { l.c.Close() }

func (l *lateCaller) local() string { return l.c.LocalAddr().String() }

func (l *lateCaller) request(method, ruri string, cseq int, branch, to string, routes []string, sdp bool) string {
	var b strings.Builder
	b.WriteString(method + " " + ruri + " SIP/2.0\r\nVia: SIP/2.0/UDP " + l.local() + ";branch=" + branch + ";rport\r\n")
	for _, r := range routes {
		b.WriteString("Route: " + r + "\r\n")
	}
	b.WriteString("From: <sip:caller@127.0.0.1>;tag=" + l.tag + "\r\nTo: " + to + "\r\nCall-ID: " + l.callID +
		"\r\nCSeq: " + strconv.Itoa(cseq) + " " + method + "\r\nContact: <sip:caller@" + l.local() + ">\r\nMax-Forwards: 70\r\n")
	body := ""
	if sdp {
		body = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
			"m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	return b.String()
}

func (l *lateCaller) send(msg string) error {
	dst, err := net.ResolveUDPAddr("udp", l.via)
	if err != nil {
		return err
	}
	_, err = l.c.WriteToUDP([]byte(msg), dst)
	return err
}

// await sends msg (again every 500 ms) until a response to method whose
// code passes want arrives.
func (l *lateCaller) await(msg, method string, want func(code int) bool) (sipMsg, error) {
	buf := make([]byte, 65535)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if msg != "" {
			if err := l.send(msg); err != nil {
				return sipMsg{}, err
			}
		}
		_ = l.c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			k, _, err := l.c.ReadFromUDP(buf)
			if err != nil {
				break // resend
			}
			raw := string(buf[:k])
			m := parseRaw(raw)
			if m.Code > 0 && m.CallID() == l.callID && strings.HasSuffix(m.CSeq(), " "+method) && want(m.Code) {
				if _, body, ok := strings.Cut(raw, "\r\n\r\n"); ok {
					m.body = body
				}
				return m, nil
			}
		}
	}
	return sipMsg{}, fmt.Errorf("no suitable answer to %s %s", method, l.callID)
}

func final(code int) bool { return code >= 200 }

// ackFailure acknowledges a non-2xx final answer to the INVITE (same branch).
func (l *lateCaller) ackFailure(res sipMsg) error {
	return l.send(l.request("ACK", "sip:"+l.conf+"@"+l.via, 1, l.branch, res.Header("to"), nil, false))
}

func (l *lateCaller) refused() error {
	res, err := l.await(l.invite, "INVITE", final)
	if err != nil {
		return err
	}
	if res.Code != 486 {
		return fmt.Errorf("INVITE answered %d, want 486", res.Code)
	}
	return l.ackFailure(res)
}

// cancelled rings, CANCELs, and then gets the node's 2xx that crossed the
// CANCEL (relayed as the node retransmits it): as RFC 3261 §15 wants, it
// ACKs and BYEs that 2xx.
func (l *lateCaller) cancelled() error {
	if _, err := l.await(l.invite, "INVITE", func(code int) bool { return code == 180 }); err != nil {
		return err
	}
	cancel := l.request("CANCEL", "sip:"+l.conf+"@"+l.via, 1, l.branch, "<sip:"+l.conf+"@"+l.via+">", nil, false)
	if _, err := l.await(cancel, "CANCEL", final); err != nil {
		return err
	}
	res, err := l.await("", "INVITE", func(code int) bool { return code == 487 })
	if err != nil {
		return err
	}
	if err := l.ackFailure(res); err != nil {
		return err
	}
	res, err = l.await("", "INVITE", func(code int) bool { return code == 200 })
	if err != nil {
		return fmt.Errorf("the 2xx that crossed the CANCEL: %w", err)
	}
	d := dialogOf(res)
	if err := l.send(l.request("ACK", d.target, 1, "z9hG4bK"+svcTag(), d.to, d.routes, false)); err != nil {
		return err
	}
	return l.bye(d)
}

// lateDialog is what in-dialog requests of a caller need from its 2xx.
type lateDialog struct {
	target, to string
	routes     []string // the UAC's route set: Record-Route reversed
}

func dialogOf(res sipMsg) lateDialog {
	d := lateDialog{target: strings.Trim(res.Header("contact"), "<>"), to: res.Header("to")}
	rr := res.hdr["record-route"]
	for i := len(rr) - 1; i >= 0; i-- {
		d.routes = append(d.routes, strings.Split(rr[i], ",")...)
	}
	return d
}

func (l *lateCaller) bye(d lateDialog) error {
	bye := l.request("BYE", d.target, 2, "z9hG4bK"+svcTag(), d.to, d.routes, false)
	if res, err := l.await(bye, "BYE", final); err != nil || res.Code != 200 {
		return fmt.Errorf("BYE: %d, %v", res.Code, err)
	}
	return nil
}

// answeredThenReinviteAfterBye sets the call up, hangs up, then sends a
// re-INVITE with SDP in the ended dialog (it crossed the BYE).
func (l *lateCaller) answeredThenReinviteAfterBye() error {
	res, err := l.await(l.invite, "INVITE", final)
	if err != nil {
		return err
	}
	if res.Code != 200 {
		return fmt.Errorf("INVITE answered %d, want 200", res.Code)
	}
	d := dialogOf(res)
	if err := l.send(l.request("ACK", d.target, 1, "z9hG4bK"+svcTag(), d.to, d.routes, false)); err != nil {
		return err
	}
	if err := l.bye(d); err != nil {
		return err
	}
	reinvite := l.request("INVITE", d.target, 3, "z9hG4bK"+svcTag(), d.to, d.routes, true)
	res, err = l.await(reinvite, "INVITE", final)
	if err != nil {
		return err
	}
	if res.Code < 300 {
		return l.send(l.request("ACK", d.target, 3, "z9hG4bK"+svcTag(), d.to, d.routes, false))
	}
	return nil
}
