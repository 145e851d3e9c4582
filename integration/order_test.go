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

// TestOrder_AckAndByeBackToBackNeverReordered sends, for 5000 calls at 500
// calls/s, the ACK and the BYE of each call back to back from one socket
// (microseconds apart) through sipedge to a node that notes the order in
// which it reads them off its socket. sipgo handles each message on its own
// goroutine; without sipedge's per-dialog sequencing the BYE overtook the
// ACK in 25–384 of such 5000 calls.
func TestOrder_AckAndByeBackToBackNeverReordered(t *testing.T) {
	const calls, perSecond = 5000, 500
	e := newEnv(t)
	node := startGoUAS(t)
	e.registerNode("n1", node.addr())
	s := e.startSipedge("a", "--media-ports=", "--log-level", "info", "--source-rate", "0") // one load generator at 500 calls/s
	s.waitRing(t, 10*time.Second, "n1")
	uac := startGoUAC(t, s.sipAddr())

	var failed atomic.Int32
	var firstErr atomic.Value
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / perSecond)
	defer tick.Stop()
	start := time.Now()
	for i := 0; i < calls; i++ {
		<-tick.C
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			d, err := uac.invite(fmt.Sprintf("ord%d", i%100), 5*time.Second)
			if err != nil {
				fail(err)
				return
			}
			bye := uac.ackAndBye(d)
			if code, err := uac.final(bye, 5*time.Second); err != nil || code != 200 {
				fail(fmt.Errorf("BYE of %s: %d %v", d.callID, code, err))
			}
		}(i)
	}
	wg.Wait()
	t.Logf("%d calls in %v, %d failed (first: %v); sipedge held %v requests for an earlier one of their dialog, %v waits ran out",
		calls, time.Since(start).Round(time.Millisecond), failed.Load(), firstErr.Load(),
		s.metric(t, "sipedge_sip_order_waits_total", nil), s.metric(t, "sipedge_sip_order_timeouts_total", nil))

	reordered, complete := 0, 0
	var examples []string
	for id, methods := range node.orders() {
		ack, bye := indexOf(methods, "ACK"), indexOf(methods, "BYE")
		if ack < 0 || bye < 0 {
			continue
		}
		complete++
		if bye < ack {
			reordered++
			if len(examples) < 5 {
				examples = append(examples, id+": "+strings.Join(methods, ","))
			}
		}
	}
	if reordered > 0 {
		t.Errorf("the node read the BYE before the ACK in %d of %d calls, e.g. %v", reordered, complete, examples)
	}
	if complete < calls*99/100 {
		t.Fatalf("only %d of %d calls reached the node with both ACK and BYE: the test proves nothing", complete, calls)
	}
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// ---------------------------------------------------------------------------
// goUAS: a media node in Go that records the order of what it reads

// goUAS answers OPTIONS, INVITE (200 with its Record-Route copied) and BYE
// with 200 on one UDP socket, read by one goroutine, and records per Call-ID
// the methods in the order they came off the socket.
type goUAS struct {
	conn *net.UDPConn
	mu   sync.Mutex
	seen map[string][]string
	done chan struct{}
}

func startGoUAS(t testing.TB) *goUAS {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("go UAS: %v", err)
	}
	_ = conn.SetReadBuffer(8 << 20)
	u := &goUAS{conn: conn, seen: map[string][]string{}, done: make(chan struct{})}
	go u.serve()
	t.Cleanup(func() { conn.Close(); <-u.done })
	return u
}

func (u *goUAS) addr() string { return u.conn.LocalAddr().String() }

// orders returns a copy of the methods read per Call-ID.
func (u *goUAS) orders() map[string][]string {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[string][]string, len(u.seen))
	for k, v := range u.seen {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// received counts requests of method with Call-ID id.
func (u *goUAS) received(id, method string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, m := range u.seen[id] {
		if m == method {
			n++
		}
	}
	return n
}

func (u *goUAS) serve() {
	defer close(u.done)
	buf := make([]byte, 65535)
	for {
		n, src, err := u.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m, ok := parseRawRequest(buf[:n])
		if !ok {
			continue // a response (sipedge answering nothing of ours) or junk
		}
		if m.method != "OPTIONS" {
			u.mu.Lock()
			u.seen[m.header("call-id")] = append(u.seen[m.header("call-id")], m.method)
			u.mu.Unlock()
		}
		if m.method == "ACK" {
			continue
		}
		_, _ = u.conn.WriteToUDP([]byte(m.answer(200, "OK", "sip:uas@"+u.addr())), src)
	}
}

// rawRequest is a request with its header lines kept as received.
type rawRequest struct {
	method string
	lines  []string // header lines
}

func parseRawRequest(b []byte) (rawRequest, bool) {
	head, _, _ := strings.Cut(string(b), "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	f := strings.Fields(lines[0])
	if len(f) != 3 || f[2] != "SIP/2.0" {
		return rawRequest{}, false
	}
	return rawRequest{method: f[0], lines: lines[1:]}, true
}

func headerName(line string) string {
	name, _, _ := strings.Cut(line, ":")
	name = strings.ToLower(strings.TrimSpace(name))
	if full, ok := compact[name]; ok {
		return full
	}
	return name
}

func (m rawRequest) header(name string) string {
	for _, l := range m.lines {
		if headerName(l) == name {
			_, v, _ := strings.Cut(l, ":")
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// answer builds a response as a UAS does: Via, From, Call-ID, CSeq and
// Record-Route copied, a To tag added, its Contact.
func (m rawRequest) answer(code int, reason, contact string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, l := range m.lines {
		switch headerName(l) {
		case "via", "from", "call-id", "cseq", "record-route":
			b.WriteString(l + "\r\n")
		case "to":
			if !strings.Contains(strings.ToLower(l), ";tag=") {
				l += ";tag=uas" + strconv.Itoa(len(m.header("call-id")))
			}
			b.WriteString(l + "\r\n")
		}
	}
	b.WriteString("Contact: <" + contact + ">\r\nContent-Length: 0\r\n\r\n")
	return b.String()
}

// ---------------------------------------------------------------------------
// goUAC: callers in Go that can send two requests back to back

// goUAC places calls from one UDP socket; a reader goroutine hands each
// final response to the request waiting for it.
type goUAC struct {
	conn   *net.UDPConn
	target *net.UDPAddr
	mu     sync.Mutex
	wait   map[string]chan sipAnswer // Call-ID + " " + CSeq → final answer
	seq    atomic.Int64
	done   chan struct{}
}

// uacDialog is an established call as the caller knows it.
type uacDialog struct {
	callID, fromTag, to, ruri string
	branch                    string   // of the INVITE
	routes                    []string // route set: the 200's Record-Route reversed
}

func startGoUAC(t testing.TB, target string) *goUAC {
	t.Helper()
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatalf("go UAC: %v", err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("go UAC: %v", err)
	}
	_ = conn.SetReadBuffer(8 << 20)
	c := &goUAC{conn: conn, target: ta, wait: map[string]chan sipAnswer{}, done: make(chan struct{})}
	go c.serve()
	t.Cleanup(func() { conn.Close(); <-c.done })
	return c
}

func (c *goUAC) local() string { return c.conn.LocalAddr().String() }

func (c *goUAC) serve() {
	defer close(c.done)
	buf := make([]byte, 65535)
	for {
		n, src, err := c.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if m, ok := parseRawRequest(buf[:n]); ok {
			// A request from sipedge (a BYE it sends itself): answer it.
			if m.method != "ACK" {
				_, _ = c.conn.WriteToUDP([]byte(m.answer(200, "OK", "sip:uac@"+c.local())), src)
			}
			continue
		}
		a, err := parseSIPResponse(buf[:n])
		if err != nil || a.Code < 200 {
			continue
		}
		c.mu.Lock()
		ch := c.wait[a.CallID+" "+a.Header("cseq")]
		c.mu.Unlock()
		if ch != nil {
			select {
			case ch <- a:
			default: // a retransmitted final answer
			}
		}
	}
}

// expect registers interest in the final answer of a request.
func (c *goUAC) expect(callID, cseq string) string {
	k := callID + " " + cseq
	c.mu.Lock()
	c.wait[k] = make(chan sipAnswer, 1)
	c.mu.Unlock()
	return k
}

// answer waits for the final answer registered under k.
func (c *goUAC) answer(k string, timeout time.Duration) (sipAnswer, error) {
	c.mu.Lock()
	ch := c.wait[k]
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.wait, k)
		c.mu.Unlock()
	}()
	select {
	case a := <-ch:
		return a, nil
	case <-time.After(timeout):
		return sipAnswer{}, fmt.Errorf("%s: no final answer within %v", k, timeout)
	}
}

// final is answer's status code.
func (c *goUAC) final(k string, timeout time.Duration) (int, error) {
	a, err := c.answer(k, timeout)
	return a.Code, err
}

func (c *goUAC) send(msg string) { _, _ = c.conn.WriteToUDP([]byte(msg), c.target) }

// inviteRequest starts a call to conference conf and returns the key of its
// final answer and the dialog's caller-side identity.
func (c *goUAC) inviteRequest(conf string) (string, uacDialog) {
	n := c.seq.Add(1)
	d := uacDialog{callID: fmt.Sprintf("ord-%d-%s", n, svcTag()), fromTag: "f" + svcTag(), branch: "z9hG4bK" + svcTag()}
	ruri := "sip:" + conf + "@" + c.target.String()
	d.ruri = ruri
	k := c.expect(d.callID, "1 INVITE")
	c.send("INVITE " + ruri + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + c.local() + ";branch=" + d.branch + ";rport\r\n" +
		"From: <sip:caller@127.0.0.1>;tag=" + d.fromTag + "\r\n" +
		"To: <" + ruri + ">\r\n" +
		"Call-ID: " + d.callID + "\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:caller@" + c.local() + ">\r\n" +
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
	return k, d
}

// invite places a call and returns its dialog once answered 200.
func (c *goUAC) invite(conf string, timeout time.Duration) (uacDialog, error) {
	k, d := c.inviteRequest(conf)
	a, err := c.answer(k, timeout)
	if err != nil {
		return d, err
	}
	if a.Code != 200 {
		c.ack(d, a) // a non-2xx is ACKed hop by hop; sipedge absorbs it
		return d, fmt.Errorf("INVITE %s answered %d %s", d.callID, a.Code, a.Reason)
	}
	d.to = a.Header("to")
	if ct := a.Header("contact"); strings.Contains(ct, "<") && strings.Contains(ct, ">") {
		d.ruri = ct[strings.Index(ct, "<")+1 : strings.Index(ct, ">")]
	}
	var rr []string
	for _, v := range a.hdr["record-route"] {
		rr = append(rr, splitRoutes(v)...)
	}
	for i := len(rr) - 1; i >= 0; i-- {
		d.routes = append(d.routes, rr[i])
	}
	return d, nil
}

// ack acknowledges a non-2xx final answer: same branch as the INVITE
// (RFC 3261 17.1.1.3), so sipedge's INVITE transaction absorbs it.
func (c *goUAC) ack(d uacDialog, a sipAnswer) {
	c.send("ACK " + d.ruri + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + c.local() + ";branch=" + d.branch + ";rport\r\n" +
		"From: <sip:caller@127.0.0.1>;tag=" + d.fromTag + "\r\n" +
		"To: " + a.Header("to") + "\r\n" +
		"Call-ID: " + d.callID + "\r\n" +
		"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
}

// inDialog builds a request of d (new branch) with the given CSeq.
func (c *goUAC) inDialog(d uacDialog, method string, cseq int) string {
	var routes strings.Builder
	for _, r := range d.routes {
		routes.WriteString("Route: " + r + "\r\n")
	}
	return method + " " + d.ruri + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + c.local() + ";branch=z9hG4bK" + svcTag() + ";rport\r\n" +
		routes.String() +
		"From: <sip:caller@127.0.0.1>;tag=" + d.fromTag + "\r\n" +
		"To: " + d.to + "\r\n" +
		"Call-ID: " + d.callID + "\r\n" +
		"CSeq: " + strconv.Itoa(cseq) + " " + method + "\r\n" +
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

// ackAndBye sends the ACK of d's 200 and its BYE back to back (two writes,
// microseconds apart) and returns the key of the BYE's answer.
func (c *goUAC) ackAndBye(d uacDialog) string {
	ack, bye := c.inDialog(d, "ACK", 1), c.inDialog(d, "BYE", 2)
	k := c.expect(d.callID, "2 BYE")
	c.send(ack)
	c.send(bye)
	return k
}

// sendAck sends only the ACK of d's 200.
func (c *goUAC) sendAck(d uacDialog) { c.send(c.inDialog(d, "ACK", 1)) }

// bye ends d and returns the BYE's final status.
func (c *goUAC) bye(d uacDialog, timeout time.Duration) (int, error) {
	k := c.expect(d.callID, "2 BYE")
	c.send(c.inDialog(d, "BYE", 2))
	return c.final(k, timeout)
}

// splitRoutes splits a Record-Route value at commas between name-addrs.
func splitRoutes(v string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '<':
			depth++
		case '>':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(v[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(v[start:]))
}
