package integration

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests check the test harness itself (redis-server, sipp scenarios,
// trace parsing) with no sipedge in the path, so that a failure of the
// end-to-end tests points at sipedge and not at the harness.

func TestHarness_RedisServerIsPrivateAndEmpty(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if n, err := e.rdb.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("fresh redis: DBSIZE = %d, %v; want 0", n, err)
	}
	e.registerNode("n1", "127.0.0.1:1")
	got, err := e.rdb.HGetAll(ctx, "sipedge:node:n1").Result()
	if err != nil || got["addr"] != "127.0.0.1:1" || got["transport"] != "udp" || got["weight"] != "100" {
		t.Fatalf("node hash = %v, %v", got, err)
	}
	if ok, _ := e.rdb.SIsMember(ctx, "sipedge:nodes", "n1").Result(); !ok {
		t.Fatal("n1 not in sipedge:nodes")
	}
}

func TestHarness_SippNodeAnswersOptions(t *testing.T) {
	n := startSippNode(t, "n1")
	for i := range 3 {
		code, err := sipOptions(n.addr(), time.Second)
		if err != nil || code != 200 {
			t.Fatalf("OPTIONS %d: %d, %v; want 200", i, code, err)
		}
	}
	if got := n.received(t, "OPTIONS"); len(got) < 4 { // the readiness probe and three more
		t.Fatalf("node trace shows %d OPTIONS, want >= 4", len(got))
	}
}

func TestHarness_SippCallerAndNodeDirect(t *testing.T) {
	n := startSippNode(t, "n1")
	confs := ids("direct", 10)
	res := runUAC(t, "direct", uac{Scenario: "uac_call.xml", Target: n.addr(),
		Rows: callRows(n.addr(), confs...), Rate: 50})
	res.requireAllSucceeded(t, len(confs))

	invites := n.received(t, "INVITE")
	if len(invites) != len(confs) {
		t.Fatalf("node got %d INVITEs, want %d", len(invites), len(confs))
	}
	got := map[string]bool{}
	for _, m := range invites {
		got[m.RURIUser()] = true
	}
	for _, id := range confs {
		if !got[id] {
			t.Errorf("node got no INVITE for conference %s (Request-URI users: %v)", id, keysOf(got))
		}
	}
	for _, meth := range []string{"ACK", "BYE"} {
		if k := len(n.received(t, meth)); k != len(confs) {
			t.Errorf("node got %d %s, want %d", k, meth, len(confs))
		}
	}
	if k := len(res.callIDs("INVITE")); k != len(confs) {
		t.Errorf("caller trace shows %d INVITE Call-IDs, want %d", k, len(confs))
	}
}

func TestHarness_SippRegisterDirect(t *testing.T) {
	n := startSippNode(t, "n1")
	var rows [][]string
	for _, u := range ids("user", 8) {
		rows = append(rows, []string{u, "127.0.0.1"})
	}
	res := runUAC(t, "register", uac{Scenario: "uac_register.xml", Target: n.addr(), Rows: rows})
	res.requireAllSucceeded(t, len(rows))
	regs := n.received(t, "REGISTER")
	if len(regs) != len(rows) {
		t.Fatalf("node got %d REGISTERs, want %d", len(regs), len(rows))
	}
	for i, m := range regs {
		if want := rows[i][0]; m.ToUser() != want {
			t.Errorf("REGISTER %d To user = %q, want %q", i, m.ToUser(), want)
		}
	}
}

func TestHarness_SumMetric(t *testing.T) {
	text := `# HELP sipedge_sip_requests_total SIP requests received, by method.
# TYPE sipedge_sip_requests_total counter
sipedge_sip_requests_total{method="BYE"} 7
sipedge_sip_requests_total{method="INVITE"} 12
sipedge_sip_requests_total_extra{method="INVITE"} 99
sipedge_dialogs_active 3
`
	for _, c := range []struct {
		name  string
		match map[string]string
		want  float64
		found bool
	}{
		{"sipedge_sip_requests_total", map[string]string{"method": "INVITE"}, 12, true},
		{"sipedge_sip_requests_total", nil, 19, true},
		{"sipedge_dialogs_active", nil, 3, true},
		{"sipedge_sip_requests_total", map[string]string{"method": "REFER"}, 0, false},
	} {
		got, found := sumMetric(text, c.name, c.match)
		if got != c.want || found != c.found {
			t.Errorf("sumMetric(%s, %v) = %v, %v; want %v, %v", c.name, c.match, got, found, c.want, c.found)
		}
	}
}

func TestHarness_UriUser(t *testing.T) {
	for in, want := range map[string]string{
		"sip:conf1@127.0.0.1:5060":             "conf1",
		`"x" <sip:alice@sipedge.test>;tag=1`:   "alice",
		"<sip:127.0.0.1:5060;lr>":              "",
		"INVITE sip:c-001@h SIP/2.0":           "c-001",
		"<sip:node@127.0.0.1:5;transport=UDP>": "node",
	} {
		if got := uriUser(in); got != want {
			t.Errorf("uriUser(%q) = %q, want %q", in, got, want)
		}
	}
	if got := viaHostPort("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport"); got != "127.0.0.1:5070" {
		t.Errorf("viaHostPort = %q", got)
	}
}

// The BYE of test TestBye_ViaOtherInstance_ReachesNode comes through
// another sipedge instance than the INVITE. sipp would answer it to the
// peer the INVITE came from; node_uas.xml answers the top Via instead
// (RFC 3261 18.2.2). Check that with two plain UDP sockets.
func TestHarness_SippNodeAnswersByeToItsVia(t *testing.T) {
	n := startSippNode(t, "n1")
	a, b := newUDPPeer(t), newUDPPeer(t)
	const callID = "via-check-1"
	a.send(t, n.addr(), "INVITE", callID, 1, "")
	res := a.waitFinal(t, "INVITE")
	if res.Code != 200 {
		t.Fatalf("INVITE answered %d", res.Code)
	}
	toTag := res.Header("to")[strings.Index(res.Header("to"), "tag="):]
	a.send(t, n.addr(), "ACK", callID, 1, ";"+toTag)
	b.send(t, n.addr(), "BYE", callID, 2, ";"+toTag)
	if res := b.waitFinal(t, "BYE"); res.Code != 200 {
		t.Fatalf("BYE answered %d on the BYE's socket", res.Code)
	}
}

// udpPeer is a bare SIP-over-UDP socket for harness checks.
type udpPeer struct{ c *net.UDPConn }

func newUDPPeer(t *testing.T) *udpPeer {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpPeer{c: c}
}

func (p *udpPeer) send(t *testing.T, to, method, callID string, cseq int, toTag string) {
	t.Helper()
	local := p.c.LocalAddr().String()
	msg := fmt.Sprintf("%s sip:conf@%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%s\r\n"+
		"From: <sip:caller@%s>;tag=caller\r\n"+
		"To: <sip:conf@%s>%s\r\n"+
		"Call-ID: %s\r\nCSeq: %d %s\r\n"+
		"Contact: <sip:caller@%s>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		method, to, local, callID, method, local, to, toTag, callID, cseq, method, local)
	dst, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.WriteToUDP([]byte(msg), dst); err != nil {
		t.Fatal(err)
	}
}

// waitFinal returns the first final response to method.
func (p *udpPeer) waitFinal(t *testing.T, method string) sipMsg {
	t.Helper()
	buf := make([]byte, 65535)
	_ = p.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, _, err := p.c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no final response to %s on %s: %v", method, p.c.LocalAddr(), err)
		}
		m := parseRaw(string(buf[:n]))
		if m.Code >= 200 && strings.HasSuffix(m.CSeq(), method) {
			return m
		}
	}
}

// parseRaw parses one SIP message's start line and headers.
func parseRaw(s string) sipMsg {
	m := sipMsg{hdr: map[string][]string{}}
	head, _, _ := strings.Cut(s, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	m.First = lines[0]
	if f := strings.Fields(m.First); len(f) >= 2 && f[0] == "SIP/2.0" {
		m.Code, _ = strconv.Atoi(f[1])
	} else if len(f) > 0 {
		m.Method = f[0]
	}
	for _, l := range lines[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok {
			k = strings.ToLower(strings.TrimSpace(k))
			if full, ok := compact[k]; ok {
				k = full
			}
			m.hdr[k] = append(m.hdr[k], strings.TrimSpace(v))
		}
	}
	return m
}
