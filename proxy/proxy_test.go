package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/ring"
)

// fakeAdmitter admits everything to one node and records placements.
type fakeAdmitter struct {
	node ring.Node
	mu   sync.Mutex
	log  []string
}

func (f *fakeAdmitter) Admit(_ context.Context, r admission.Request) admission.Verdict {
	f.record("admit " + r.Method + " " + r.Key())
	f.mu.Lock()
	node := f.node
	f.mu.Unlock()
	if node.Addr == "" {
		return admission.Verdict{Code: 503, Reason: admission.ReasonNoNode, RetryAfter: 7}
	}
	return admission.Verdict{Admit: true, Node: node, Placement: admission.PlacementRing}
}

// setNode changes where new dialogs are admitted (a ring change).
func (f *fakeAdmitter) setNode(n ring.Node) {
	f.mu.Lock()
	f.node = n
	f.mu.Unlock()
}
func (f *fakeAdmitter) DialogStarted(confID, node string) {
	f.record("start " + confID + " " + node)
}
func (f *fakeAdmitter) DialogEnded(confID, node string) {
	f.record("end " + confID + " " + node)
}
func (f *fakeAdmitter) DialogEndedElsewhere(_ context.Context, owner, _, _, _, key string) {
	f.record("noted " + owner + " " + key)
}
func (f *fakeAdmitter) record(s string) {
	f.mu.Lock()
	f.log = append(f.log, s)
	f.mu.Unlock()
}
func (f *fakeAdmitter) events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

// peer is a raw UDP SIP endpoint on loopback: it sends exactly the bytes a
// test writes and returns exactly what arrives.
type peer struct {
	t    *testing.T
	conn *net.UDPConn
}

func newPeer(t *testing.T) *peer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{t: t, conn: c}
}

func (p *peer) addr() string { return p.conn.LocalAddr().String() }

func (p *peer) send(to string, msg string) {
	p.t.Helper()
	ua, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		p.t.Fatal(err)
	}
	msg = strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")
	if _, err := p.conn.WriteToUDP([]byte(msg), ua); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next message whose first line matches prefix, skipping
// others (100 Trying, retransmissions), or fails after the timeout.
func (p *peer) recv(prefix string) string {
	p.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	buf := make([]byte, 65535)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			p.t.Fatalf("waiting for %q: %v", prefix, err)
		}
		m := string(buf[:n])
		if strings.HasPrefix(m, prefix) {
			return m
		}
	}
}

func header(msg, name string) []string {
	var out []string
	for _, line := range strings.Split(msg, "\r\n") {
		if i := strings.IndexByte(line, ':'); i > 0 && strings.EqualFold(strings.TrimSpace(line[:i]), name) {
			out = append(out, strings.TrimSpace(line[i+1:]))
		}
	}
	return out
}

func startProxy(t *testing.T, adm Admitter) *Proxy {
	t.Helper()
	px, err := New(Options{Listen: "127.0.0.1:0", RouteSecret: "test-secret", UserAgent: "sipedge-test"},
		adm, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	serve(t, px)
	return px
}

func serve(t *testing.T, px *Proxy) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = px.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func invite(from *peer, ruri, callID, branch string, maxFwd int) string {
	return fmt.Sprintf(`INVITE %s SIP/2.0
Via: SIP/2.0/UDP %s;branch=%s;rport
Max-Forwards: %d
From: <sip:alice@example.com>;tag=caller1
To: <sip:conf1@example.com>
Call-ID: %s
CSeq: 1 INVITE
Contact: <sip:alice@%s>
X-Unknown-Header: keep me
Content-Length: 0

`, ruri, from.addr(), branch, maxFwd, callID, from.addr())
}

// answer makes the UAS side reply to a request it received, copying the
// headers a UAS must copy (Via, Record-Route, From, To, Call-ID, CSeq).
func answer(req string, code int, reason, toTag, contact string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, h := range []string{"Via", "Record-Route", "From", "Call-ID", "CSeq"} {
		for _, v := range header(req, h) {
			fmt.Fprintf(&b, "%s: %s\r\n", h, v)
		}
	}
	to := header(req, "To")[0]
	if toTag != "" {
		to += ";tag=" + toTag
	}
	fmt.Fprintf(&b, "To: %s\r\nContact: <sip:%s>\r\nContent-Length: 0\r\n\r\n", to, contact)
	return b.String()
}

func TestProxy_InviteAckByeThroughTwoInstances(t *testing.T) {
	node := newPeer(t)
	adm := &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr(), Transport: "udp"}}
	a := startProxy(t, adm)
	b := startProxy(t, &fakeAdmitter{}) // knows no node: must route by Record-Route alone
	caller := newPeer(t)

	caller.send(a.Addr(), invite(caller, "sip:conf1@"+a.Addr(), "call-1", "z9hG4bK-c1", 70))
	trying := caller.recv("SIP/2.0 100")
	if !strings.Contains(trying, "z9hG4bK-c1") {
		t.Fatalf("100 Trying not for our INVITE:\n%s", trying)
	}
	inv := node.recv("INVITE ")
	if !strings.HasPrefix(inv, "INVITE sip:conf1@"+node.addr()+" ") {
		t.Errorf("Request-URI not rewritten to the node:\n%s", inv)
	}
	vias := header(inv, "Via")
	if len(vias) != 2 || !strings.Contains(vias[0], a.Addr()) || !strings.Contains(vias[1], "received=127.0.0.1") {
		t.Errorf("Via handling wrong: %q", vias)
	}
	if mf := header(inv, "Max-Forwards"); len(mf) != 1 || mf[0] != "69" {
		t.Errorf("Max-Forwards = %q, want 69", mf)
	}
	if h := header(inv, "X-Unknown-Header"); len(h) != 1 || h[0] != "keep me" {
		t.Errorf("unknown header not passed unchanged: %q", h)
	}
	rr := header(inv, "Record-Route")
	if len(rr) != 1 || !strings.Contains(rr[0], ";lr") || !strings.Contains(rr[0], routeParam+"=") {
		t.Fatalf("Record-Route = %q", rr)
	}

	node.send(a.Addr(), answer(inv, 200, "OK", "node1", node.addr()))
	ok := caller.recv("SIP/2.0 200")
	if got := header(ok, "Via"); len(got) != 1 || !strings.Contains(got[0], "z9hG4bK-c1") {
		t.Errorf("200 upstream Vias = %q, want only the caller's", got)
	}
	route := header(ok, "Record-Route")[0]

	// ACK and BYE from the caller go to instance B with A's route.
	inDialog := func(method, branch string, cseq int) string {
		return fmt.Sprintf(`%s sip:conf1@%s SIP/2.0
Via: SIP/2.0/UDP %s;branch=%s
Max-Forwards: 70
Route: %s
From: <sip:alice@example.com>;tag=caller1
To: <sip:conf1@example.com>;tag=node1
Call-ID: call-1
CSeq: %d %s
Content-Length: 0

`, method, node.addr(), caller.addr(), branch, route, cseq, method)
	}
	caller.send(b.Addr(), inDialog("ACK", "z9hG4bK-ack1", 1))
	ack := node.recv("ACK ")
	if len(header(ack, "Route")) != 0 {
		t.Errorf("sipedge Route not removed from ACK:\n%s", ack)
	}
	caller.send(b.Addr(), inDialog("BYE", "z9hG4bK-bye1", 2))
	bye := node.recv("BYE ")
	if v := header(bye, "Via"); len(v) != 2 || !strings.Contains(v[0], b.Addr()) {
		t.Errorf("BYE not forwarded by B: Vias %q", v)
	}
	node.send(b.Addr(), answer(bye, 200, "OK", "", node.addr()))
	caller.recv("SIP/2.0 200")

	waitFor(t, func() bool {
		ev := strings.Join(adm.events(), ",")
		return strings.Contains(ev, "start conf1 n1")
	}, "dialog start recorded on A")
}

func TestProxy_NodeSideRequestGoesToCallerSource(t *testing.T) {
	node := newPeer(t)
	px := startProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}})
	caller := newPeer(t)
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "call-2", "z9hG4bK-c2", 70))
	inv := node.recv("INVITE ")
	node.send(px.Addr(), answer(inv, 200, "OK", "node2", node.addr()))
	caller.recv("SIP/2.0 200")
	rr := header(inv, "Record-Route")[0]
	// The node hangs up: its BYE targets a Contact that lies; sipedge must
	// send it to the address the caller's INVITE really came from.
	node.send(px.Addr(), fmt.Sprintf(`BYE sip:alice@192.0.2.99:5060 SIP/2.0
Via: SIP/2.0/UDP %s;branch=z9hG4bK-nbye
Max-Forwards: 70
Route: %s
From: <sip:conf1@example.com>;tag=node2
To: <sip:alice@example.com>;tag=caller1
Call-ID: call-2
CSeq: 1 BYE
Content-Length: 0

`, node.addr(), rr))
	bye := caller.recv("BYE ")
	if !strings.Contains(bye, "Call-ID: call-2") {
		t.Fatalf("wrong BYE:\n%s", bye)
	}
}

func TestProxy_LocalAnswers(t *testing.T) {
	node := newPeer(t)
	px := startProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}})
	caller := newPeer(t)
	forged := newRouteSigner("other-secret").Encode(routeState{NodeAddr: "127.0.0.1:1", NodeTransport: "udp", FromTag: "caller1"})
	cases := []struct {
		name string
		msg  string
		want string
	}{
		{"OPTIONS to sipedge", fmt.Sprintf(`OPTIONS sip:%s SIP/2.0
Via: SIP/2.0/UDP %s;branch=z9hG4bK-o1
Max-Forwards: 70
From: <sip:mon@example.com>;tag=m1
To: <sip:%s>
Call-ID: opt-1
CSeq: 1 OPTIONS
Content-Length: 0

`, px.Addr(), caller.addr(), px.Addr()), "SIP/2.0 200"},
		{"Max-Forwards zero", invite(caller, "sip:conf1@"+px.Addr(), "mf-1", "z9hG4bK-mf", 0), "SIP/2.0 483"},
		{"missing From tag", strings.Replace(invite(caller, "sip:conf1@"+px.Addr(), "bad-1", "z9hG4bK-b1", 70),
			";tag=caller1", "", 1), "SIP/2.0 400"},
		{"no conference id", invite(caller, "sip:"+px.Addr(), "nc-1", "z9hG4bK-nc", 70), "SIP/2.0 404"},
		{"forged route", fmt.Sprintf(`BYE sip:x@127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP %s;branch=z9hG4bK-f1
Max-Forwards: 70
Route: <sip:%s;lr;%s=%s>
From: <sip:a@example.com>;tag=caller1
To: <sip:b@example.com>;tag=t2
Call-ID: forged-1
CSeq: 2 BYE
Content-Length: 0

`, caller.addr(), px.Addr(), routeParam, forged), "SIP/2.0 404"},
		{"loop", fmt.Sprintf(`INVITE sip:conf1@%s SIP/2.0
Via: SIP/2.0/UDP %s;branch=z9hG4bK-l1
Via: SIP/2.0/UDP %s;branch=%s
Max-Forwards: 60
From: <sip:a@example.com>;tag=l1
To: <sip:conf1@example.com>
Call-ID: loop-1
CSeq: 1 INVITE
Content-Length: 0

`, px.Addr(), caller.addr(), px.Addr(), "LOOPBRANCH"), "SIP/2.0 482"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.msg
			if tc.name == "loop" {
				// The branch sipedge would have written for this very request.
				msg = strings.ReplaceAll(msg, "LOOPBRANCH", loopBranchFor(t, "sip:conf1@"+px.Addr(), "l1", "", "loop-1", 1))
			}
			caller.send(px.Addr(), msg)
			caller.recv(tc.want)
		})
	}
	if got := len(node.drain()); got != 0 {
		t.Errorf("node received %d messages from locally answered requests", got)
	}
}

func TestProxy_NoNodeAnswers503WithRetryAfter(t *testing.T) {
	px := startProxy(t, &fakeAdmitter{})
	caller := newPeer(t)
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "nn-1", "z9hG4bK-nn", 70))
	res := caller.recv("SIP/2.0 503")
	if ra := header(res, "Retry-After"); len(ra) != 1 || ra[0] != "7" {
		t.Errorf("Retry-After = %q, want 7", ra)
	}
}

var uriRe = regexp.MustCompile(`^sip:([^@]*)@([^:]+):(\d+)$`)

// loopBranchFor computes the branch sipedge writes for a request with these
// loop-relevant fields, by building that request and hashing it.
func loopBranchFor(t *testing.T, ruri, fromTag, toTag, callID string, cseq int) string {
	t.Helper()
	m := uriRe.FindStringSubmatch(ruri)
	if m == nil {
		t.Fatalf("bad uri %q", ruri)
	}
	req := parseRequest(t, fmt.Sprintf("INVITE %s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK-x\r\nFrom: <sip:a@b>;tag=%s\r\nTo: <sip:c@d>%s\r\nCall-ID: %s\r\nCSeq: %d INVITE\r\nContent-Length: 0\r\n\r\n",
		ruri, fromTag, map[bool]string{true: ";tag=" + toTag, false: ""}[toTag != ""], callID, cseq))
	return branchMark + fmt.Sprintf("%x", loopHash(req)) + ".0"
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// drain returns whatever arrived in the next 200 ms.
func (p *peer) drain() []string {
	var out []string
	buf := make([]byte, 65535)
	for {
		_ = p.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return out
		}
		out = append(out, string(buf[:n]))
	}
}

func testLogger(t *testing.T) zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
	}
	return zerolog.New(io.Discard)
}

// A caller that ignores Record-Route (sipp's built-in uac) sends ACK and
// BYE to sipedge's own address without Route: they go to the conference's
// node found by placement, like the INVITE.
func TestProxy_CallerIgnoringRecordRoute(t *testing.T) {
	node := newPeer(t)
	adm := &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}}
	px := startProxy(t, adm)
	caller := newPeer(t)
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "norr-1", "z9hG4bK-n1", 70))
	inv := node.recv("INVITE ")
	node.send(px.Addr(), answer(inv, 200, "OK", "node1", node.addr()))
	caller.recv("SIP/2.0 200")
	noRoute := func(method, branch string, cseq int) string {
		return noRouteRequest(method, px.Addr(), caller.addr(), "norr-1", branch, cseq)
	}
	caller.send(px.Addr(), noRoute("ACK", "z9hG4bK-n2", 1))
	node.recv("ACK sip:conf1@" + node.addr())
	caller.send(px.Addr(), noRoute("BYE", "z9hG4bK-n3", 2))
	bye := node.recv("BYE sip:conf1@" + node.addr())
	node.send(px.Addr(), answer(bye, 200, "OK", "", node.addr()))
	caller.recv("SIP/2.0 200")
	waitFor(t, func() bool { return strings.Contains(strings.Join(adm.events(), ","), "end conf1") }, "dialog end recorded")
}

// TestProxy_CallerIgnoringRecordRoute_HeldDialogNeedsNoAdmission: the ACK
// and BYE of a dialog this instance holds, sent without Route, go to the
// node that has the call, even when admission would now pick another one
// (a failover or ring change), and admission (a Redis lookup) is not asked.
func TestProxy_CallerIgnoringRecordRoute_HeldDialogNeedsNoAdmission(t *testing.T) {
	node, other := newPeer(t), newPeer(t)
	adm := &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}}
	px := startProxy(t, adm)
	caller := newPeer(t)
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "held-1", "z9hG4bK-h1", 70))
	inv := node.recv("INVITE ")
	node.send(px.Addr(), answer(inv, 200, "OK", "node1", node.addr()))
	caller.recv("SIP/2.0 200")
	adm.setNode(ring.Node{Name: "n2", Addr: other.addr()})
	before := len(adm.events())
	noRoute := func(method, branch string, cseq int) string {
		return noRouteRequest(method, px.Addr(), caller.addr(), "held-1", branch, cseq)
	}
	caller.send(px.Addr(), noRoute("ACK", "z9hG4bK-h2", 1))
	node.recv("ACK sip:conf1@" + node.addr())
	caller.send(px.Addr(), noRoute("BYE", "z9hG4bK-h3", 2))
	bye := node.recv("BYE sip:conf1@" + node.addr())
	node.send(px.Addr(), answer(bye, 200, "OK", "", node.addr()))
	caller.recv("SIP/2.0 200")
	waitFor(t, func() bool { return strings.Contains(strings.Join(adm.events(), ","), "end conf1 n1") }, "dialog end recorded on n1")
	for _, ev := range adm.events()[before:] {
		if strings.HasPrefix(ev, "admit ") {
			t.Errorf("admission asked for an in-dialog request of a held dialog: %q", ev)
		}
	}
	// A request of a dialog not held here (unknown To tag) is still placed
	// by admission: now toward n2.
	caller.send(px.Addr(), strings.Replace(noRoute("BYE", "z9hG4bK-h4", 3), "tag=node1", "tag=elsewhere", 1))
	other.recv("BYE sip:conf1@" + other.addr())
}

// noRouteRequest is an in-dialog request of a caller that ignores
// Record-Route: sent to sipedge's own address, with no Route header.
func noRouteRequest(method, proxyAddr, callerAddr, callID, branch string, cseq int) string {
	return fmt.Sprintf(`%s sip:conf1@%s SIP/2.0
Via: SIP/2.0/UDP %s;branch=%s
Max-Forwards: 70
From: <sip:alice@example.com>;tag=caller1
To: <sip:conf1@example.com>;tag=node1
Call-ID: %s
CSeq: %d %s
Content-Length: 0

`, method, proxyAddr, callerAddr, branch, callID, cseq, method)
}
