package integration

import (
	"fmt"
	"testing"
	"time"
)

var (
	twoInstances = []string{"A", "B"}
	threeNodes   = []string{"n1", "n2", "n3"}
)

// Issue 2, item 7.1: calls split across two instances all succeed and
// every one of them reaches exactly one node through the instance it
// entered.
func TestCalls_SplitAcrossTwoInstances_AllSucceed(t *testing.T) {
	const perInstance = 100
	c := newCluster(t, twoInstances, threeNodes)
	a, b := c.inst[0], c.inst[1]

	runA := startUAC(t, "via-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("t1-a", perInstance)...), Rate: 50, Hold: 20 * time.Millisecond})
	runB := startUAC(t, "via-B", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), ids("t1-b", perInstance)...), Rate: 50, Hold: 20 * time.Millisecond})
	resA, resB := runA.wait(), runB.wait()
	resA.requireAllSucceeded(t, perInstance)
	resB.requireAllSucceeded(t, perInstance)

	invites := c.received(t, "INVITE")
	if len(invites) != 2*perInstance {
		t.Errorf("nodes received %d distinct INVITEs in total, want %d", len(invites), 2*perInstance)
	}
	spreadA := requireDelivered(t, invites, "INVITE", resA.callIDs("INVITE"), "A")
	spreadB := requireDelivered(t, invites, "INVITE", resB.callIDs("INVITE"), "B")
	t.Logf("INVITEs per node: via A %v, via B %v", spreadA, spreadB)

	byes := c.received(t, "BYE")
	if len(byes) != 2*perInstance {
		t.Errorf("nodes received %d distinct BYEs in total, want %d", len(byes), 2*perInstance)
	}
	requireDelivered(t, byes, "BYE", resA.callIDs("INVITE"), "A")
	requireDelivered(t, byes, "BYE", resB.callIDs("INVITE"), "B")
	if acks := c.received(t, "ACK"); len(acks) != 2*perInstance {
		t.Errorf("nodes received %d distinct ACKs, want %d", len(acks), 2*perInstance)
	}

	// 200 distinct conference ids over three equal nodes: all get some.
	total := map[string]int{}
	for _, d := range invites {
		total[d.node]++
	}
	for _, n := range threeNodes {
		if total[n] == 0 {
			t.Errorf("node %s got none of %d conferences: %v", n, 2*perInstance, total)
		}
	}

	for _, s := range c.inst {
		if got := s.metric(t, "sipedge_sip_requests_total", map[string]string{"method": "INVITE"}); got != perInstance {
			t.Errorf("sipedge %s sipedge_sip_requests_total{method=INVITE} = %v, want %d", s.name, got, perInstance)
		}
	}
	c.waitNoConferences(3 * time.Second)
}

// Issue 2, item 7.2: every call of a conference lands on one node,
// whichever instance it enters: while the conference is active (sticky
// placement in sipedge:conf:<id>) and after it ended (both instances hash
// the id onto the same ring).
func TestConference_StaysOnOneNode_WhicheverInstance(t *testing.T) {
	const confs = 40
	c := newCluster(t, twoInstances, threeNodes)
	a, b := c.inst[0], c.inst[1]

	// Concurrent: each conference gets a call via A and one via B, held long
	// enough that both are up at the same time.
	live := ids("t2-live", confs)
	hold := 2500 * time.Millisecond
	runA := startUAC(t, "live-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), live...), Rate: 80, Hold: hold})
	runB := startUAC(t, "live-B", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), live...), Rate: 80, Hold: hold})
	// While the calls are up, every conference has its placement hash.
	redisNode := map[string]string{}
	eventually(t, 2*time.Second, "sipedge:conf:<id> for every live conference", func() string {
		for _, id := range live {
			if redisNode[id] == "" {
				redisNode[id] = c.confNode(id)
			}
			if redisNode[id] == "" {
				return fmt.Sprintf("no node field in sipedge:conf:%s (keys: %d)", id, len(c.confKeys()))
			}
		}
		return ""
	})
	resA, resB := runA.wait(), runB.wait()
	resA.requireAllSucceeded(t, confs)
	resB.requireAllSucceeded(t, confs)

	// Sequential: all calls via A end before the same conferences are
	// called via B.
	seq := ids("t2-seq", confs)
	runUAC(t, "seq-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), seq...), Rate: 80}).requireAllSucceeded(t, confs)
	runUAC(t, "seq-B", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), seq...), Rate: 80}).requireAllSucceeded(t, confs)

	place := c.placements(t)
	invites := c.received(t, "INVITE")
	viaCount := map[string]map[string]int{} // conf → instance → INVITEs
	for _, d := range invites {
		id := d.msg.RURIUser()
		if viaCount[id] == nil {
			viaCount[id] = map[string]int{}
		}
		viaCount[id][d.viaIns]++
	}
	used := map[string]int{}
	for _, id := range append(append([]string{}, live...), seq...) {
		nodes := place[id]
		if len(nodes) != 1 {
			t.Errorf("conference %s split over nodes %v", id, nodes)
			continue
		}
		for n, k := range nodes {
			used[n]++
			if k != 2 || viaCount[id]["A"] != 1 || viaCount[id]["B"] != 1 {
				t.Errorf("conference %s: node %s got %d INVITEs (by instance %v), want one via A and one via B",
					id, n, k, viaCount[id])
			}
			if rn, ok := redisNode[id]; ok && rn != n {
				t.Errorf("conference %s: sipedge:conf node = %q but the calls reached %s", id, rn, n)
			}
		}
	}
	if len(used) < 2 {
		t.Errorf("%d conferences all on nodes %v: placement does not spread", 2*confs, used)
	}
	t.Logf("conferences per node: %v", used)
	c.waitNoConferences(3 * time.Second)
}

// Issue 2, item 7.3: REGISTER is routed by hashing the AOR: the same AOR
// via A and via B reaches the same node, and many AORs spread over nodes.
func TestRegister_RoutedByAOR_SameNodeFromEitherInstance(t *testing.T) {
	const aors = 60
	c := newCluster(t, twoInstances, threeNodes)
	a, b := c.inst[0], c.inst[1]
	// The AOR domain is an IP literal so that nothing is ever looked up
	// in DNS; both instances see the same AOR user@127.0.0.1.
	var rows [][]string
	for _, u := range ids("t3-user", aors) {
		rows = append(rows, []string{u, "127.0.0.1"})
	}
	runA := startUAC(t, "reg-A", uac{Scenario: "uac_register.xml", Target: a.sipAddr(), Rows: rows, Rate: 60})
	runB := startUAC(t, "reg-B", uac{Scenario: "uac_register.xml", Target: b.sipAddr(), Rows: rows, Rate: 60})
	runA.wait().requireAllSucceeded(t, aors)
	runB.wait().requireAllSucceeded(t, aors)

	regs := c.received(t, "REGISTER")
	byAOR := map[string]map[string]int{} // user → node → REGISTERs
	viaCount := map[string]map[string]int{}
	for _, d := range regs {
		u := d.msg.ToUser()
		if byAOR[u] == nil {
			byAOR[u], viaCount[u] = map[string]int{}, map[string]int{}
		}
		byAOR[u][d.node]++
		viaCount[u][d.viaIns]++
	}
	used := map[string]int{}
	for _, r := range rows {
		u := r[0]
		nodes := byAOR[u]
		if len(nodes) != 1 {
			t.Errorf("AOR %s@127.0.0.1 reached nodes %v, want exactly one", u, nodes)
			continue
		}
		for n, k := range nodes {
			used[n]++
			if k != 2 || viaCount[u]["A"] != 1 || viaCount[u]["B"] != 1 {
				t.Errorf("AOR %s: node %s got %d REGISTERs (by instance %v), want one via A and one via B", u, n, k, viaCount[u])
			}
		}
	}
	if len(used) < 2 {
		t.Errorf("%d AORs all on nodes %v: REGISTER routing does not spread", aors, used)
	}
	t.Logf("AORs per node: %v", used)
}

// Issue 2, item 7.4: in-dialog requests carry sipedge's Record-Route, so
// the BYE of a call set up through A and sent to B reaches the node
// through B without any state in B, and still does when A is gone.
//
// The caller is one sipp scenario: the ACK and BYE are built from the
// 200's route set ([routes], [next_url]), and a setdest action just before
// the BYE switches the destination socket to B. The BYE therefore carries
// A's Record-Route as its Route header but enters sipedge at B; the node
// trace shows B's Via on it, which proves B (not A) forwarded it.
func TestBye_ViaOtherInstance_ReachesNode(t *testing.T) {
	c := newCluster(t, twoInstances, threeNodes)
	a, b := c.inst[0], c.inst[1]

	// A up: B routes the BYE from the Route alone.
	const calls = 20
	res := runUAC(t, "bye-via-B", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(b.sipAddr(), ids("t4-alive", calls)...), Rate: 50, Hold: 20 * time.Millisecond})
	res.requireAllSucceeded(t, calls)
	sent := res.callIDs("INVITE")
	requireDelivered(t, c.received(t, "INVITE"), "INVITE", sent, "A")
	requireDelivered(t, c.received(t, "ACK"), "ACK", sent, "A")
	byes := c.received(t, "BYE")
	requireDelivered(t, byes, "BYE", sent, "B")
	for _, id := range sent {
		for _, v := range byes[id].msg.Vias() {
			if c.instanceOf(v) == "A" {
				t.Errorf("BYE %s went through A too (Vias %v): B relayed it to A instead of routing it", id, byes[id].msg.Vias())
			}
		}
	}
	if got := b.metric(t, "sipedge_sip_requests_total", map[string]string{"method": "BYE"}); got != calls {
		t.Errorf("sipedge B counted %v BYEs, want %d", got, calls)
	}
	if got := a.metric(t, "sipedge_sip_requests_total", map[string]string{"method": "BYE"}); got != 0 {
		t.Errorf("sipedge A counted %v BYEs, want 0", got)
	}
	c.waitNoConferences(3 * time.Second)

	// A killed between ACK and BYE: the calls still end through B.
	const held = 10
	run := startUAC(t, "bye-after-A-died", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(b.sipAddr(), ids("t4-dead", held)...), Rate: 50, Hold: 4 * time.Second})
	eventually(t, 3*time.Second, "all held calls ACKed at the nodes", func() string {
		if n := len(c.received(t, "ACK")) - calls; n < held {
			return fmt.Sprintf("%d of %d ACKs", n, held)
		}
		return ""
	})
	a.proc.kill()
	t.Logf("killed sipedge A with %d calls up", held)
	res = run.wait()
	res.requireAllSucceeded(t, held)
	requireDelivered(t, c.received(t, "BYE"), "BYE", res.callIDs("INVITE"), "B")
	// The conferences A placed end with their last BYE, wherever it passed.
	c.waitNoConferences(3 * time.Second)
}
