package integration

import (
	"context"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Issue 8, item 3: dialog counts that forgery cannot move.

// counts is every count a conference moves: its hash's dialogs and node,
// node_calls and instance_calls.
type counts struct {
	confNode, confDialogs string
	nodeCalls, instCalls  map[string]string
}

func (c counts) String() string {
	return fmt.Sprintf("conf node=%q dialogs=%q node_calls=%v instance_calls=%v", c.confNode, c.confDialogs, c.nodeCalls, c.instCalls)
}

func (c counts) equal(o counts) bool {
	return c.confNode == o.confNode && c.confDialogs == o.confDialogs &&
		maps.Equal(c.nodeCalls, o.nodeCalls) && maps.Equal(c.instCalls, o.instCalls)
}

func (e *env) counts(conf string) counts {
	e.t.Helper()
	ctx := context.Background()
	c := counts{confNode: e.confNode(conf)}
	c.confDialogs, _ = e.rdb.HGet(ctx, "sipedge:conf:"+conf, "dialogs").Result()
	var err error
	if c.nodeCalls, err = e.rdb.HGetAll(ctx, "sipedge:node_calls").Result(); err != nil {
		e.t.Fatalf("HGETALL node_calls: %v", err)
	}
	if c.instCalls, err = e.rdb.HGetAll(ctx, "sipedge:instance_calls").Result(); err != nil {
		e.t.Fatalf("HGETALL instance_calls: %v", err)
	}
	return c
}

// waitCounts waits until the counts of conf are want.
func (e *env) waitCounts(timeout time.Duration, conf string, want counts) {
	e.t.Helper()
	eventually(e.t, timeout, "counts "+want.String(), func() string {
		if got := e.counts(conf); !got.equal(want) {
			return "got " + got.String()
		}
		return ""
	})
}

// holdCounts checks that the counts of conf stay want for d (they are
// rewritten every second: a change would show).
func (e *env) holdCounts(d time.Duration, conf string, want counts, what string) {
	e.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if got := e.counts(conf); !got.equal(want) {
			e.t.Fatalf("%s moved the counts: got %v, want %v", what, got, want)
		}
	}
}

// rawCall is one call placed by hand over UDP, so the test can send (and
// replay) exactly the BYE it wants.
type rawCall struct {
	t                  testing.TB
	conn               *net.UDPConn
	callID, tag, toTag string
	route, contact     string
	conf               string
}

func (r *rawCall) local() string { return r.conn.LocalAddr().String() }

func (r *rawCall) send(to, msg string) {
	r.t.Helper()
	ua, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.conn.WriteToUDP([]byte(msg), ua); err != nil {
		r.t.Fatal(err)
	}
}

// final reads until the final response to cseq method of callID.
func (r *rawCall) final(callID, method string) sipAnswer {
	r.t.Helper()
	buf := make([]byte, 65535)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_ = r.conn.SetReadDeadline(deadline)
		n, _, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			r.t.Fatalf("waiting for the answer to %s %s: %v", method, callID, err)
		}
		a, err := parseSIPResponse(buf[:n])
		if err != nil || a.CallID != callID || a.Code < 200 || !strings.HasSuffix(a.Header("cseq"), method) {
			continue
		}
		return a
	}
}

// startRawCall places an INVITE into conf through sipedge at target, ACKs
// its 200 along the Record-Route and leaves the call up.
func startRawCall(t testing.TB, target, conf string) *rawCall {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawCall{t: t, conn: c, callID: "raw-" + svcTag(), tag: svcTag(), conf: conf}
	r.send(target, newDialogRequest("INVITE", target, r.local(), conf, r.callID, svcTag(), r.tag))
	ok := r.final(r.callID, "INVITE")
	if ok.Code != 200 {
		t.Fatalf("INVITE into %s answered %d %s", conf, ok.Code, ok.Reason)
	}
	r.route = ok.Header("record-route")
	to := ok.Header("to")
	_, r.toTag, _ = strings.Cut(to, ";tag=")
	r.contact = strings.Trim(ok.Header("contact"), "<>")
	if i := strings.IndexByte(r.contact, '>'); i >= 0 {
		r.contact = r.contact[:i]
	}
	if r.route == "" || r.toTag == "" {
		t.Fatalf("200 without Record-Route or To tag:\n%s", ok.Raw)
	}
	r.send(target, r.inDialog("ACK", 1, svcTag(), true))
	return r
}

// inDialog builds ACK or BYE of the call, with or without its route.
func (r *rawCall) inDialog(method string, cseq int, branch string, routed bool) string {
	ruri, route := r.contact, ""
	if routed {
		route = "Route: " + r.route + "\r\n"
	}
	return method + " " + ruri + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + r.local() + ";branch=z9hG4bK" + branch + ";rport\r\n" + route +
		"From: <sip:svc-test@127.0.0.1>;tag=" + r.tag + "\r\n" +
		"To: <sip:" + r.conf + "@127.0.0.1>;tag=" + r.toTag + "\r\n" +
		"Call-ID: " + r.callID + "\r\n" +
		"CSeq: " + strconv.Itoa(cseq) + " " + method + "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

// bye sends the call's BYE (one fresh transaction each time: a replay, not
// a retransmission) to target and returns the answer code.
func (r *rawCall) bye(target string) int {
	r.t.Helper()
	r.send(target, r.inDialog("BYE", 2, svcTag(), true))
	return r.final(r.callID, "BYE").Code
}

// forgedBye sends a BYE with a random Call-ID and tags and no route to
// the conference's Request-URI on sipedge, and returns the answer code.
func (r *rawCall) forgedBye(target string) int {
	r.t.Helper()
	id := "forged-" + svcTag()
	msg := "BYE sip:" + r.conf + "@" + target + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + r.local() + ";branch=z9hG4bK" + svcTag() + ";rport\r\n" +
		"From: <sip:svc-test@127.0.0.1>;tag=" + svcTag() + "\r\n" +
		"To: <sip:" + r.conf + "@127.0.0.1>;tag=" + svcTag() + "\r\n" +
		"Call-ID: " + id + "\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	r.send(target, msg)
	return r.final(id, "BYE").Code
}

// TestCounts_ForgedAndReplayedByes_MoveNoCount: three callers hold a
// conference through A, a fourth (placed by hand) too. Forged BYEs (random
// Call-ID, no route, to the conference's Request-URI) through both
// instances change nothing; the fourth caller's genuine BYE, through B,
// ends its dialog once; replayed three times through each instance it
// changes nothing more. The next caller joins the same node.
func TestCounts_ForgedAndReplayedByes_MoveNoCount(t *testing.T) {
	c := newCluster(t, twoInstances, threeNodes)
	a, b := c.inst[0], c.inst[1]
	const conf = "cnt-forged"

	held := startUAC(t, "held", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), conf, conf, conf), Rate: 20, Hold: 12 * time.Second})
	var node string
	eventually(t, 5*time.Second, "three calls up", func() string {
		if node = c.confNode(conf); node == "" || c.nodeCalls(node) != "3" {
			return fmt.Sprintf("node %q node_calls %q", node, c.nodeCalls(node))
		}
		return ""
	})
	raw := startRawCall(t, a.sipAddr(), conf)
	four := counts{confNode: node, confDialogs: "4", nodeCalls: map[string]string{node: "4"}, instCalls: map[string]string{"A": "4"}}
	c.waitCounts(3*time.Second, conf, four)

	codes := map[int]int{}
	for _, s := range []*sipedge{a, b, a} {
		codes[raw.forgedBye(s.sipAddr())]++
	}
	t.Logf("forged BYEs answered %v", codes)
	c.holdCounts(2500*time.Millisecond, conf, four, "forged BYEs")

	if code := raw.bye(b.sipAddr()); code != 200 {
		t.Fatalf("genuine BYE through B answered %d", code)
	}
	three := counts{confNode: node, confDialogs: "3", nodeCalls: map[string]string{node: "3"}, instCalls: map[string]string{"A": "3"}}
	c.waitCounts(3*time.Second, conf, three)

	codes = map[int]int{}
	for _, s := range []*sipedge{a, b, a, b, a, b} {
		codes[raw.bye(s.sipAddr())]++
	}
	t.Logf("genuine BYE replayed 6 times (3 through each instance) answered %v", codes)
	for _, s := range []*sipedge{a, b} {
		codes[raw.forgedBye(s.sipAddr())]++
	}
	c.holdCounts(2500*time.Millisecond, conf, three, "replayed and forged BYEs")

	next := runUAC(t, "next", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), conf), Hold: 20 * time.Millisecond})
	next.requireAllSucceeded(t, 1)
	if got := perNode(c.received(t, "INVITE"), next.callIDs("INVITE")); got[node] != 1 {
		t.Errorf("next caller reached %v, want the conference's node %s", got, node)
	}
	for _, s := range c.inst {
		if n := s.metricOr0(t, "sipedge_dialogs_bye_ignored_total", nil); n == 0 {
			t.Errorf("sipedge %s counted no ignored BYE", s.name)
		}
	}

	held.wait().requireAllSucceeded(t, 3)
	c.waitNoConferences(3 * time.Second)
	c.waitCounts(3*time.Second, conf, counts{nodeCalls: map[string]string{}, instCalls: map[string]string{}})
}
