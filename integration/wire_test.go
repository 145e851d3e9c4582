package integration

// Message sizes, RFC answers and TCP limits (issue 8 items 1, 2, 5, 7),
// driven through the real sipedge binary with sipp callers and nodes.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startSippNodeWith runs a sipp node with another scenario and registers
// it with the given transport ("udp" or "tcp").
func (e *env) startSippNodeWith(name, scenarioFile, transport string) *sippNode {
	e.t.Helper()
	sipp := requireTool(e.t, "sipp")
	dir := e.t.TempDir()
	n := &sippNode{name: name, port: freePort(e.t), msgFile: filepath.Join(dir, name+".msg")}
	tflag := "u1"
	if transport == "tcp" {
		tflag = "tn" // node_uas.xml changes destination for BYE: multi-socket
	}
	n.proc = startProc(e.t, "node-"+name, sipp,
		"-sf", scenario(e.t, scenarioFile),
		"-i", "127.0.0.1", "-p", strconv.Itoa(n.port), "-t", tflag,
		"-nostdin", "-aa", "-timeout", "300s", "-max_socket", "1000",
		"-trace_msg", "-message_file", n.msgFile,
		"-trace_err", "-error_file", filepath.Join(dir, name+".err"),
	)
	n.proc.extra = func() string { return n.summary() }
	n.proc.files = []string{n.msgFile, filepath.Join(dir, name+".err")}
	eventually(e.t, 5*time.Second, "sipp node "+name+" listening", func() string {
		if n.proc.exited() {
			e.t.Fatalf("sipp node %s exited: %v\n%s", name, n.proc.waitErr, n.proc.log())
		}
		if transport == "udp" {
			if _, err := sipOptions(n.addr(), 300*time.Millisecond); err != nil {
				return err.Error()
			}
			return ""
		}
		c, err := net.DialTimeout("tcp", n.addr(), 300*time.Millisecond)
		if err != nil {
			return err.Error()
		}
		c.Close()
		return ""
	})
	e.registerNode(name, n.addr())
	if transport != "udp" {
		if err := e.rdb.HSet(e.t.Context(), "sipedge:node:"+name, "transport", transport).Err(); err != nil {
			e.t.Fatal(err)
		}
	}
	return n
}

// TestWire_LargeSDPOverUDP: a node's 3000-byte SDP answer and a caller's
// 4 KB SDP offer both complete over UDP, with anchoring on and off. Before,
// sipgo refused every UDP write above 1300 bytes: the caller saw 100 only.
func TestWire_LargeSDPOverUDP(t *testing.T) {
	for _, anchoring := range []string{"on", "off"} {
		t.Run("anchoring_"+anchoring, func(t *testing.T) {
			e := newEnv(t)
			ports := mediaPorts(t)
			if anchoring == "off" {
				ports = ""
			}
			se := e.startSipedge("A", "--media-ports", ports)
			e.startSippNodeWith("big", "node_uas_bigsdp.xml", "udp")
			se.waitRing(t, 5*time.Second, "big")
			_, metrics, err := se.get("/metrics")
			if err != nil {
				t.Fatal(err)
			}
			if _, present := sumMetric(metrics, "sipedge_relay_ports_in_use", nil); present != (anchoring == "on") {
				t.Fatalf("relay metrics present=%v with anchoring %s", present, anchoring)
			}

			res := runUAC(t, "bigans", uac{Scenario: "uac_call.xml", Target: se.sipAddr(),
				Rows: callRows(se.sipAddr(), ids("w1-"+anchoring, 3)...), Rate: 10})
			res.requireAllSucceeded(t, 3)
			if n := largestReceived(res, 200); n < 3000 {
				t.Fatalf("the caller's largest 200 was %d bytes; want the node's >3000-byte answer", n)
			}

			// Now the other node only: the 4 KB offer.
			e.rdb.SRem(t.Context(), "sipedge:nodes", "big")
			e.startNode("small")
			se.waitRing(t, 5*time.Second, "small")
			res = runUAC(t, "bigoffer", uac{Scenario: "uac_call_bigsdp.xml", Target: se.sipAddr(),
				Rows: callRows(se.sipAddr(), ids("w2-"+anchoring, 3)...), Rate: 10})
			res.requireAllSucceeded(t, 3)
			if sent := largestSent(res, "INVITE"); sent < 4000 {
				t.Fatalf("the INVITE sent was %d bytes; want >4000", sent)
			}
			if got := se.metricOr0(t, "sipedge_sip_messages_not_sent_total", nil); got != 0 {
				t.Fatalf("sipedge_sip_messages_not_sent_total = %v; want 0", got)
			}
		})
	}
}

func largestReceived(r uacResult, code int) int {
	n := 0
	for _, m := range r.Msgs {
		if !m.Sent && m.Code == code {
			n = max(n, m.size())
		}
	}
	return n
}

func largestSent(r uacResult, method string) int {
	n := 0
	for _, m := range r.Msgs {
		if m.Sent && m.Method == method {
			n = max(n, m.size())
		}
	}
	return n
}

// size approximates a traced message's length from its headers' values
// (Content-Length plus the header lines).
func (m sipMsg) size() int {
	cl, _ := strconv.Atoi(m.Header("content-length"))
	n := len(m.First) + cl
	for k, vs := range m.hdr {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// TestWire_TooLargeGets513 sends an INVITE above max_message_size over UDP
// and over TCP: both get 513 and are counted.
func TestWire_TooLargeGets513(t *testing.T) {
	e := newEnv(t)
	se := e.startSipedge("A", "--max-message-size", "2000")
	e.startNode("n1")
	se.waitRing(t, 5*time.Second, "n1")
	body := strings.Repeat("a=x-pad:"+strings.Repeat("p", 60)+"\r\n", 40)
	for _, transport := range []string{"udp", "tcp"} {
		c, err := net.Dial(transport, se.sipAddr())
		if err != nil {
			t.Fatal(err)
		}
		local := c.LocalAddr().String()
		req := "INVITE sip:big@" + se.sipAddr() + " SIP/2.0\r\n" +
			"Via: SIP/2.0/" + strings.ToUpper(transport) + " " + local + ";branch=z9hG4bK-big-" + transport + ";rport\r\n" +
			"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:big@" + se.sipAddr() + ">\r\nCall-ID: big-" + transport + "\r\n" +
			"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: " +
			strconv.Itoa(len(body)) + "\r\n\r\n" + body
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		c.Close()
		if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 513 ") {
			t.Fatalf("%s: answer %q, %v; want 513", transport, buf[:min(n, 60)], err)
		}
	}
	if got := se.metric(t, "sipedge_sip_malformed_total", map[string]string{"reason": "too large"}); got != 2 {
		t.Fatalf("sipedge_sip_malformed_total{reason=too large} = %v; want 2", got)
	}
}

// TestWire_TCPNode: a node registered with transport tcp gets the call
// over TCP and the call completes.
func TestWire_TCPNode(t *testing.T) {
	e := newEnv(t)
	se := e.startSipedge("A")
	node := e.startSippNodeWith("tn", "node_uas_tcp.xml", "tcp")
	se.waitRing(t, 10*time.Second, "tn")
	res := runUAC(t, "totcp", uac{Scenario: "uac_call.xml", Target: se.sipAddr(),
		Rows: callRows(se.sipAddr(), ids("w3", 2)...), Rate: 10})
	res.requireAllSucceeded(t, 2)
	invites := node.received(t, "INVITE")
	if len(invites) != 2 {
		t.Fatalf("TCP node got %d INVITEs; want 2", len(invites))
	}
	for _, inv := range invites {
		if via := inv.Vias()[0]; !strings.Contains(via, "SIP/2.0/TCP") {
			t.Fatalf("INVITE reached the node with top Via %q; want TCP", via)
		}
	}
}

// recorder accepts TCP connections and counts them.
type recorder struct {
	l     net.Listener
	conns atomic.Int64
}

func newRecorder(t *testing.T, addr string) *recorder {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	r := &recorder{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			c.Close()
		}
	}()
	return r
}

// TestWire_ResponseNeverToViaHost: TCP requests whose Via names another
// host (127.0.0.9 with a listener, or a host name), from clients that close
// at once: sipedge opens no connection to 127.0.0.9 and makes no DNS query;
// the answer goes to the received address, 127.0.0.1 with the Via's port
// (RFC 3261 §18.2.2: the connection, else the received address).
func TestWire_ResponseNeverToViaHost(t *testing.T) {
	e := newEnv(t)
	se := e.startSipedge("A")
	node := e.startNode("n1")
	se.waitRing(t, 5*time.Second, "n1")
	// The received address: the source IP (127.0.0.1) with the Via's port.
	received, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer received.Close()
	got := make(chan string, 4)
	go func() {
		for {
			c, err := received.Accept()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(c)
			c.Close()
			got <- string(b)
		}
	}()
	rec := newRecorder(t, net.JoinHostPort("127.0.0.9", strconv.Itoa(received.Addr().(*net.TCPAddr).Port)))
	viaHosts := []string{rec.l.Addr().String(), "caller.sipedge-test.invalid:5099"}
	for i, via := range viaHosts {
		c, err := net.Dial("tcp", se.sipAddr())
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("via-host-%d", i)
		req := "REGISTER sip:127.0.0.1 SIP/2.0\r\n" +
			"Via: SIP/2.0/TCP " + via + ";branch=z9hG4bK-" + id + "\r\n" +
			"From: <sip:u" + strconv.Itoa(i) + "@127.0.0.1>;tag=1\r\nTo: <sip:u" + strconv.Itoa(i) + "@127.0.0.1>\r\n" +
			"Call-ID: " + id + "\r\nCSeq: 1 REGISTER\r\nContact: <sip:u@" + via + ">\r\nExpires: 60\r\n" +
			"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	eventually(t, 5*time.Second, "the node answered both REGISTERs", func() string {
		if n := len(node.received(t, "REGISTER")); n < 2 {
			return fmt.Sprintf("%d REGISTERs at the node", n)
		}
		return ""
	})
	time.Sleep(2 * time.Second) // the answers have come back and gone wherever they go
	select {
	case msg := <-got:
		if !strings.HasPrefix(msg, "SIP/2.0 200") || !strings.Contains(msg, "via-host-0") {
			t.Fatalf("the received address got %q; want the 200 to via-host-0", msg)
		}
	case <-time.After(8 * time.Second): // under make test's load the new connection can take longer than the sleep
		t.Fatal("the answer never reached the received address (source IP, Via port)")
	}
	if n := rec.conns.Load(); n != 0 {
		t.Fatalf("sipedge opened %d connections to the Via host 127.0.0.9; want 0", n)
	}
	if got := se.metricOr0(t, "sipedge_sip_dns_refused_total", nil); got != 0 {
		t.Fatalf("sipedge tried %v DNS lookups; want 0", got)
	}
}

// TestWire_TCPLimits: 500 idle connections are closed after the idle
// timeout, a byte-a-second sender is cut off after the header timeout, a
// source over its connection limit is refused, and a TCP call still works.
func TestWire_TCPLimits(t *testing.T) {
	e := newEnv(t)
	se := e.startSipedge("A", "--tcp-idle-timeout", "3s", "--tcp-header-timeout", "2500ms",
		"--tcp-max-conns-per-source", "600")
	e.startNode("n1")
	se.waitRing(t, 5*time.Second, "n1")

	// 500 idle connections.
	const idle = 500
	var closedAt sync.Map
	opened := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < idle; i++ {
		c, err := net.Dial("tcp", se.sipAddr())
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err := io.Copy(io.Discard, c)
			if err == nil { // EOF: sipedge closed it
				closedAt.Store(i, time.Since(opened))
			}
		}(i, c)
	}

	// A slow sender: one byte a second of a request that never ends.
	slow, err := net.Dial("tcp", se.sipAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slowStart := time.Now()
	slowCut := make(chan time.Duration, 1)
	go func() {
		msg := "OPTIONS sip:" + se.sipAddr() + " SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK-slow\r\n"
		for i := 0; i < len(msg); i++ {
			if _, err := slow.Write([]byte{msg[i]}); err != nil {
				slowCut <- time.Since(slowStart)
				return
			}
			time.Sleep(time.Second)
		}
		slowCut <- 0
	}()
	go func() {
		_, _ = io.Copy(io.Discard, slow)
		slowCut <- time.Since(slowStart)
	}()

	// A normal call over TCP while all that is open.
	runTCPCall(t, se)

	wg.Wait()
	n := 0
	closedAt.Range(func(_, v any) bool {
		n++
		if d := v.(time.Duration); d < 2*time.Second {
			t.Errorf("an idle connection was closed after %v; want about the 3 s idle timeout", d)
			return false
		}
		return true
	})
	if n != idle {
		t.Fatalf("%d of %d idle connections were closed by sipedge", n, idle)
	}
	select {
	case d := <-slowCut:
		if d < 2*time.Second || d > 8*time.Second {
			t.Fatalf("the byte-a-second sender was cut after %v; want about the 2.5 s header timeout", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the byte-a-second sender was never cut off")
	}
	eventually(t, 5*time.Second, "closures counted by reason", func() string {
		if got := se.metricOr0(t, "sipedge_sip_tcp_closed_total", map[string]string{"reason": "idle"}); got < idle {
			return fmt.Sprintf("idle closures %v; want >= %d", got, idle)
		}
		if got := se.metricOr0(t, "sipedge_sip_tcp_closed_total", map[string]string{"reason": "header_timeout"}); got != 1 {
			return fmt.Sprintf("header_timeout closures %v; want 1", got)
		}
		return ""
	})
}

// TestWire_TCPConnsPerSource: the connection over the per-source limit is
// closed at once and counted.
func TestWire_TCPConnsPerSource(t *testing.T) {
	e := newEnv(t)
	se := e.startSipedge("A", "--tcp-max-conns-per-source", "5")
	var conns []net.Conn
	for i := 0; i < 6; i++ {
		c, err := net.Dial("tcp", se.sipAddr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		defer c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		closed := err == io.EOF || (err != nil && !isTimeout(err))
		if closed != (i == 5) {
			t.Fatalf("connection %d: read %v; want only the 6th closed", i, err)
		}
	}
	if got := se.metric(t, "sipedge_sip_tcp_closed_total", map[string]string{"reason": "per_source_limit"}); got != 1 {
		t.Fatalf("per_source_limit closures = %v; want 1", got)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// runTCPCall places one INVITE / ACK / BYE over TCP by hand and fails
// unless each step gets its answer.
func runTCPCall(t *testing.T, se *sipedge) {
	t.Helper()
	c, err := net.Dial("tcp", se.sipAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := c.LocalAddr().String()
	rd := bufio.NewReader(c)
	send := func(s string) {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	sdp := "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49176 RTP/AVP 0\r\n"
	ruri := "sip:tcpcall@" + se.sipAddr()
	send("INVITE " + ruri + " SIP/2.0\r\nVia: SIP/2.0/TCP " + local + ";branch=z9hG4bK-tcp1\r\n" +
		"From: <sip:c@127.0.0.1>;tag=tc\r\nTo: <" + ruri + ">\r\nCall-ID: tcp-call-1\r\nCSeq: 1 INVITE\r\n" +
		"Contact: <sip:c@" + local + ";transport=tcp>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n" +
		"Content-Length: " + strconv.Itoa(len(sdp)) + "\r\n\r\n" + sdp)
	ok := readUntilFinal(t, c, rd, "INVITE")
	toTag := ok.Header("to")
	var rr []string // the route set: Record-Route reversed (RFC 3261 §12.1.2)
	for _, v := range ok.hdr["record-route"] {
		for _, e := range strings.Split(v, ",") {
			rr = append([]string{strings.TrimSpace(e)}, rr...)
		}
	}
	route := ""
	if len(rr) > 0 {
		route = "Route: " + strings.Join(rr, ", ") + "\r\n"
	}
	target := strings.Trim(strings.SplitN(ok.Header("contact"), ";", 2)[0], "<>")
	if ok.Code != 200 {
		t.Fatalf("TCP INVITE answered %d; want 200", ok.Code)
	}
	send("ACK " + target + " SIP/2.0\r\nVia: SIP/2.0/TCP " + local + ";branch=z9hG4bK-tcp2\r\n" + route +
		"From: <sip:c@127.0.0.1>;tag=tc\r\nTo: " + toTag + "\r\nCall-ID: tcp-call-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
	send("BYE " + target + " SIP/2.0\r\nVia: SIP/2.0/TCP " + local + ";branch=z9hG4bK-tcp3\r\n" + route +
		"From: <sip:c@127.0.0.1>;tag=tc\r\nTo: " + toTag + "\r\nCall-ID: tcp-call-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
	if bye := readUntilFinal(t, c, rd, "BYE"); bye.Code != 200 {
		t.Fatalf("TCP BYE answered %d; want 200", bye.Code)
	}
}

// readUntilFinal reads responses from a TCP stream until a final one for
// method.
func readUntilFinal(t *testing.T, c net.Conn, rd *bufio.Reader, method string) sipAnswer {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var head strings.Builder
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the answer to %s: %v (so far %q)", method, err, head.String())
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		a, err := parseSIPResponse([]byte(head.String()))
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.Atoi(a.Header("content-length")); n > 0 {
			if _, err := io.ReadFull(rd, make([]byte, n)); err != nil {
				t.Fatal(err)
			}
		}
		if a.Code >= 200 && strings.HasSuffix(a.Header("cseq"), method) {
			return a
		}
	}
}
