package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Issue 8, item 9: a media node SIGKILLed under 100 calls/s costs no call.
// The INVITEs it swallowed are retried on the next node of the ring after
// the failover timeout; the node is marked suspect at the first of them,
// before the OPTIONS probes mark it down; later calls go to the others.
func TestFailover_NodeKilledUnderLoad_NoCallFails(t *testing.T) {
	e := newEnv(t)
	nodes := []*sippNode{e.startNode("n1"), e.startNode("n2"), e.startNode("n3")}
	s := e.startSipedge("A", "--failover-timeout", "1s", "--failover-attempts", "2")
	s.waitRing(t, 5*time.Second, "n1", "n2", "n3")
	victim := nodes[1]

	const calls, rate = 500, 100 // 5 s of load, one conference per call
	run := startUAC(t, "drill", uac{Scenario: "uac_failover.xml", Target: s.sipAddr(),
		Rows: callRows(s.sipAddr(), ids("fo-drill", calls)...), Rate: rate, Hold: 20 * time.Millisecond,
		Timeout: 40 * time.Second})
	time.Sleep(1500 * time.Millisecond)
	victim.proc.kill()
	t.Logf("killed node %s", victim.name)
	// Suspect as soon as the first call to it fails over (failover_timeout),
	// before the probes take it down (probe-down × (interval + timeout)).
	eventually(t, 2*time.Second, victim.name+" suspect in /api/status", func() string {
		d, body, err := s.status()
		if err != nil {
			return err.Error() + "\n" + body
		}
		for _, n := range d.Nodes {
			if n.Name == victim.name && n.Reason == "suspect: failed a call" && n.Eligible != nil && !*n.Eligible {
				return ""
			}
		}
		return fmt.Sprintf("%+v", d.Nodes)
	})
	res := run.wait()

	// Every call was set up: sipp counts a call failed on any unexpected
	// answer or a missing 200 to its INVITE.
	res.requireAllSucceeded(t, calls)

	// Which node answered each call (the Contact of its 200), and which
	// calls lost their BYE (answered by the victim before it died).
	victimPort := strconv.Itoa(victim.port)
	answeredBy := map[string]string{} // Call-ID -> port in the 200's Contact
	byeOK := map[string]bool{}
	for _, m := range res.Msgs {
		if m.Sent || m.Code != 200 {
			continue
		}
		switch {
		case strings.HasSuffix(m.CSeq(), "INVITE"):
			answeredBy[m.CallID()] = contactPort(m.Header("contact"))
		case strings.HasSuffix(m.CSeq(), "BYE"):
			byeOK[m.CallID()] = true
		}
	}
	if len(answeredBy) != calls {
		t.Fatalf("%d calls answered 200 in the trace, want %d", len(answeredBy), calls)
	}
	lost, onVictim := 0, 0
	for id, port := range answeredBy {
		if port == victimPort {
			onVictim++
		}
		if !byeOK[id] {
			lost++
			if port != victimPort {
				t.Errorf("call %s answered by port %s lost its BYE: only calls on the killed node may", id, port)
			}
		}
	}
	t.Logf("%d calls answered by %s before the kill, %d of them could not be hung up there", onVictim, victim.name, lost)
	if lost > onVictim/3+5 {
		t.Errorf("%d BYEs lost: more than the calls the node held when it died can explain", lost)
	}

	// Failed over, from the victim only, to the others.
	failovers := s.metric(t, "sipedge_proxy_failover_total", nil)
	timeouts := s.metric(t, "sipedge_proxy_failover_total", map[string]string{"reason": "timeout"})
	t.Logf("failovers: %v (timeout %v)", failovers, timeouts)
	if timeouts == 0 {
		t.Fatal("no call failed over after its node was killed")
	}
	lines := s.logLines("new call failed over to the next node of the ring")
	if len(lines) == 0 {
		t.Fatal("no failover log line")
	}
	for _, l := range lines {
		if l["node"] != victim.name || l["next_node"] == victim.name || l["next_node"] == "" || l["call_id"] == "" || l["level"] != "warn" {
			t.Errorf("failover line %v: want warn, node %s, another next_node, a call_id", l, victim.name)
		}
	}

	// Suspect at once: marked (counted) before the probes marked it down.
	if n := s.metric(t, "sipedge_ring_suspect_marks_total", nil); n < 1 {
		t.Errorf("suspect marks %v, want at least 1", n)
	}
	logText := s.proc.log()
	suspectAt := strings.Index(logText, `"media node suspect: it failed a call`)
	downAt := strings.Index(logText, `"media node down: OPTIONS probes failing"`)
	if suspectAt < 0 {
		t.Fatalf("no suspect log line for %s", victim.name)
	}
	if downAt >= 0 && downAt < suspectAt {
		t.Errorf("the probes marked %s down before the failed calls marked it suspect", victim.name)
	}
	for _, l := range s.logLines("media node suspect: it failed a call") {
		if l["node"] != victim.name {
			t.Errorf("suspect line for %v, want only %s", l["node"], victim.name)
		}
	}
	// And out of the ring (suspect or, by now, probe down).
	in, body, err := s.ringMembers()
	if err != nil || in[victim.name] || !in["n1"] || !in["n3"] {
		t.Errorf("ring after the drill %v (%v)\n%s", keysOf(in), err, body)
	}
}

// contactPort is the port of the first sip: URI in a Contact value.
func contactPort(contact string) string {
	i := strings.Index(contact, "@")
	if i < 0 {
		return ""
	}
	hp := contact[i+1:]
	if j := strings.IndexAny(hp, ";>"); j >= 0 {
		hp = hp[:j]
	}
	_, port, _ := strings.Cut(hp, ":")
	return port
}

// startRefusingNode runs a sipp node that answers OPTIONS 200 (healthy) and
// every INVITE 100 then code (testdata/node_refuse.xml), and registers it.
func (e *env) startRefusingNode(name string, code int, reason string) *sippNode {
	e.t.Helper()
	t := e.t
	sipp := requireTool(t, "sipp")
	dir := t.TempDir()
	n := &sippNode{name: name, port: freePort(t), msgFile: filepath.Join(dir, name+".msg")}
	tmpl, err := os.ReadFile(scenario(t, "node_refuse.xml"))
	if err != nil {
		t.Fatal(err)
	}
	sf := filepath.Join(dir, "node_refuse.xml")
	xml := strings.NewReplacer("[code]", strconv.Itoa(code), "[reason]", reason).Replace(string(tmpl))
	if err := os.WriteFile(sf, []byte(xml), 0o644); err != nil {
		t.Fatal(err)
	}
	n.proc = startProc(t, "node-"+name, sipp,
		"-sf", sf,
		"-i", "127.0.0.1", "-p", strconv.Itoa(n.port), "-t", "u1",
		"-nostdin", "-aa", "-timeout", "300s",
		"-trace_msg", "-message_file", n.msgFile,
		"-trace_err", "-error_file", filepath.Join(dir, name+".err"),
	)
	n.proc.extra = func() string { return n.summary() }
	n.proc.files = []string{n.msgFile, filepath.Join(dir, name+".err")}
	eventually(t, 5*time.Second, "sipp node "+name+" answers OPTIONS", func() string {
		if n.proc.exited() {
			t.Fatalf("sipp node %s exited: %v\n%s", name, n.proc.waitErr, n.proc.log())
		}
		if c, err := sipOptions(n.addr(), 300*time.Millisecond); err != nil || c != 200 {
			return fmt.Sprintf("answered %d, %v", c, err)
		}
		return ""
	})
	e.registerNode(name, n.addr())
	return n
}

// A node that answers 503 (or 500, 408) has its calls retried on the next
// node; one that answers 486 Busy or 404 has its answer relayed to the
// caller and nothing retried.
func TestFailover_NodeAnswers_5xxRetried_486And404Relayed(t *testing.T) {
	for _, tc := range []struct {
		code    int
		reason  string
		retried bool
	}{
		{503, "Service Unavailable", true},
		{500, "Server Internal Error", true},
		{408, "Request Timeout", true},
		{486, "Busy Here", false},
		{404, "Not Found", false},
	} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			e := newEnv(t)
			bad := e.startRefusingNode("bad", tc.code, tc.reason)
			good := e.startNode("good")
			s := e.startSipedge("A")
			s.waitRing(t, 5*time.Second, "bad", "good")

			const n = 30 // one conference each: about half hash to bad
			answers := map[int]int{}
			var relayed []string
			for i := range n {
				a, err := sipNewDialog(s.sipAddr(), "INVITE", fmt.Sprintf("fo-%d-%d", tc.code, i), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				answers[a.Code]++
				if a.Code == tc.code {
					relayed = append(relayed, a.CallID)
				}
			}
			t.Logf("answers %v", answers)
			badGot := bad.received(t, "INVITE")
			if len(badGot) == 0 {
				t.Fatalf("no call went to the refusing node: nothing tested (answers %v)", answers)
			}
			goodGot := map[string]bool{}
			for _, m := range good.received(t, "INVITE") {
				goodGot[m.CallID()] = true
			}
			failovers := s.metric(t, "sipedge_proxy_failover_total", nil)
			if tc.retried {
				if answers[200] != n {
					t.Fatalf("answers %v: want all %d answered 200 (the %d calls the refusing node got retried)", answers, n, len(badGot))
				}
				for _, m := range badGot {
					if !goodGot[m.CallID()] {
						t.Errorf("call %s refused %d by bad was not retried on good", m.CallID(), tc.code)
					}
				}
				if failovers < float64(len(badGot)) {
					t.Errorf("failover metric %v, want at least %d", failovers, len(badGot))
				}
				reason := "5xx"
				if tc.code == 408 {
					reason = "408"
				}
				if got := s.metric(t, "sipedge_proxy_failover_total", map[string]string{"reason": reason}); got != failovers {
					t.Errorf("failover{reason=%s} %v of %v", reason, got, failovers)
				}
				if s.metric(t, "sipedge_ring_suspect_marks_total", nil) < 1 {
					t.Error("the refusing node was never marked suspect")
				}
				return
			}
			if answers[tc.code] != len(badGot) || answers[200]+answers[tc.code] != n {
				t.Fatalf("answers %v: want %d × %d (every call bad got) and the rest 200", answers, len(badGot), tc.code)
			}
			for _, id := range relayed {
				if goodGot[id] {
					t.Errorf("call %s answered %d was retried on good", id, tc.code)
				}
			}
			if failovers != 0 {
				t.Errorf("failover metric %v, want 0", failovers)
			}
		})
	}
}

// The conference of a dead node follows its next caller: the call fails
// over, the placement moves to the node that answered, and the caller
// after it goes straight there.
func TestFailover_ConferenceFollowsTheNewNode(t *testing.T) {
	e := newEnv(t)
	nodes := map[string]*sippNode{"n1": e.startNode("n1"), "n2": e.startNode("n2")}
	s := e.startSipedge("A", "--failover-timeout", "1s")
	s.waitRing(t, 5*time.Second, "n1", "n2")
	answeredBy := func(a sipAnswer) string {
		for name, n := range nodes {
			if contactPort(a.Header("contact")) == strconv.Itoa(n.port) {
				return name
			}
		}
		return "?"
	}
	// A conference active on n1.
	conf := ""
	for i := 0; i < 40 && conf == ""; i++ {
		id := fmt.Sprintf("fo-follow-%d", i)
		a, err := sipNewDialog(s.sipAddr(), "INVITE", id, 3*time.Second)
		if err != nil || a.Code != 200 {
			t.Fatalf("INVITE %s: %v %d", id, err, a.Code)
		}
		if answeredBy(a) == "n1" {
			conf = id
		}
	}
	if conf == "" {
		t.Fatal("no conference landed on n1")
	}
	eventually(t, 3*time.Second, "conference "+conf+" placed on n1", func() string {
		if n := e.confNode(conf); n != "n1" {
			return "placed on " + n
		}
		return ""
	})

	nodes["n1"].proc.kill()
	a, err := sipNewDialog(s.sipAddr(), "INVITE", conf, 5*time.Second)
	if err != nil || a.Code != 200 || answeredBy(a) != "n2" {
		t.Fatalf("next caller of %s after n1 died: %v %d from %s", conf, err, a.Code, answeredBy(a))
	}
	if n := e.confNode(conf); n != "n2" {
		t.Fatalf("conference %s placed on %q after the failover, want n2", conf, n)
	}
	before := s.metric(t, "sipedge_proxy_failover_total", nil)
	if before < 1 {
		t.Fatalf("the call was not failed over (metric %v)", before)
	}
	a, err = sipNewDialog(s.sipAddr(), "INVITE", conf, 3*time.Second)
	if err != nil || a.Code != 200 || answeredBy(a) != "n2" {
		t.Fatalf("third caller of %s: %v %d from %s", conf, err, a.Code, answeredBy(a))
	}
	if after := s.metric(t, "sipedge_proxy_failover_total", nil); after != before {
		t.Errorf("the third caller was failed over too (%v -> %v): sent to the dead node again", before, after)
	}
}
