package integration

import (
	"fmt"
	"testing"
	"time"
)

// Issue 2, item 7.5: a node that dies mid-run (its sipp killed) leaves the
// ring within the probe window, and every call started after that window
// succeeds on the remaining nodes.
func TestNodeKilled_LeavesRing_NewCallsSucceed(t *testing.T) {
	c := newCluster(t, twoInstances, threeNodes)
	a, b := c.inst[0], c.inst[1]
	victim := c.nodes[2]

	// Load through A while the node dies. Calls in flight on the victim may
	// fail; only the instances' reaction and later calls are judged.
	bg := startUAC(t, "during-kill", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("t5-during", 60)...), Rate: 20, Hold: 10 * time.Millisecond})
	time.Sleep(time.Second)
	victim.proc.kill()
	killed := time.Now()
	t.Logf("killed node %s", victim.name)

	// Detection bound: probe-down consecutive failed probes, each one a
	// probe-interval wait plus a probe-timeout wait (a dead UDP node does
	// not answer, so every probe runs into the timeout), plus 1 s of slack.
	window := time.Duration(probeDown)*(probeInterval+probeTimeout) + time.Second
	for _, s := range c.inst {
		eventually(t, window-time.Since(killed), fmt.Sprintf("node %s out of sipedge %s's ring", victim.name, s.name), func() string {
			in, body, err := s.ringMembers()
			if err != nil {
				return err.Error() + "\n" + body
			}
			if in[victim.name] || !in["n1"] || !in["n2"] {
				return fmt.Sprintf("ring %v", keysOf(in))
			}
			return ""
		})
	}
	t.Logf("node %s out of both rings %v after the kill (bound %v)", victim.name, time.Since(killed).Round(time.Millisecond), window)

	const after = 45
	runA := startUAC(t, "after-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("t5-after-a", after)...), Rate: 45})
	runB := startUAC(t, "after-B", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), ids("t5-after-b", after)...), Rate: 45})
	resA, resB := runA.wait(), runB.wait()
	resA.requireAllSucceeded(t, after)
	resB.requireAllSucceeded(t, after)
	invites := c.received(t, "INVITE")
	spreadA := requireDelivered(t, invites, "INVITE", resA.callIDs("INVITE"), "A")
	spreadB := requireDelivered(t, invites, "INVITE", resB.callIDs("INVITE"), "B")
	if spreadA[victim.name]+spreadB[victim.name] != 0 {
		t.Errorf("the dead node got INVITEs: via A %v, via B %v", spreadA, spreadB)
	}
	for _, n := range []string{"n1", "n2"} {
		if spreadA[n]+spreadB[n] == 0 {
			t.Errorf("surviving node %s got none of %d new conferences (via A %v, via B %v)", n, 2*after, spreadA, spreadB)
		}
	}

	res := bg.wait()
	t.Logf("calls during the kill: %d successful, %d failed (calls on %s in flight may fail)",
		res.Successful, res.Failed, victim.name)
	for _, s := range c.inst {
		if s.proc.exited() {
			t.Errorf("sipedge %s exited: %v", s.name, s.proc.waitErr)
		}
	}
}

// Issue 2, item 7.6: a node added with plain Redis writes (no publish)
// gets new conferences within 1 s, while conferences already active stay
// on their node.
func TestNodeAdded_GetsNewConferencesWithin1s_ActiveOnesStay(t *testing.T) {
	c := newCluster(t, twoInstances, threeNodes)
	a, b := c.inst[0], c.inst[1]

	// Conferences active before the ring changes.
	const active = 40
	held := ids("t6-held", active)
	heldRun := startUAC(t, "held-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), held...), Rate: 60, Hold: 5 * time.Second})
	eventually(t, 3*time.Second, "held calls ACKed at the nodes", func() string {
		if n := len(c.received(t, "ACK")); n < active {
			return fmt.Sprintf("%d of %d ACKs", n, active)
		}
		return ""
	})
	before := map[string]string{} // conference → node
	for id, nodes := range c.placements(t) {
		for n := range nodes {
			before[id] = n
		}
	}

	n4 := startSippNode(t, "n4")
	c.nodes = append(c.nodes, n4)
	c.registerNode("n4", n4.addr()) // SADD + HSET, nothing published
	added := time.Now()
	time.Sleep(time.Second)

	const fresh = 60
	freshRun := startUAC(t, "fresh-B", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), ids("t6-fresh", fresh)...), Rate: 150}) // all placed within ~0.4 s
	joinRun := startUAC(t, "join-B", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), held...), Rate: 60})
	t.Logf("placing calls %v after adding n4", time.Since(added).Round(time.Millisecond))
	for _, s := range c.inst {
		in, body, err := s.ringMembers()
		if err != nil || !in["n4"] {
			t.Errorf("%v after the HSET, sipedge %s ring is %v (%v)\n%s",
				time.Since(added).Round(time.Millisecond), s.name, keysOf(in), err, body)
		}
	}
	freshRes, joinRes := freshRun.wait(), joinRun.wait()
	freshRes.requireAllSucceeded(t, fresh)
	joinRes.requireAllSucceeded(t, active)

	invites := c.received(t, "INVITE")
	spread := requireDelivered(t, invites, "INVITE", freshRes.callIDs("INVITE"), "B")
	t.Logf("new conferences per node after adding n4: %v", spread)
	if spread["n4"] == 0 {
		t.Errorf("n4 got none of %d new conferences placed 1 s after it was added: %v", fresh, spread)
	}
	// The second participant of each active conference joins its node.
	moved := 0
	for _, id := range joinRes.callIDs("INVITE") {
		d := invites[id]
		if conf := d.msg.RURIUser(); d.node != before[conf] {
			moved++
			t.Errorf("active conference %s split: first call on %s, second (via B, after n4 joined) on %s",
				conf, before[conf], d.node)
		}
	}
	heldRun.wait().requireAllSucceeded(t, active)
	if moved == 0 {
		t.Logf("all %d active conferences kept their node", active)
	}
	c.waitNoConferences(3 * time.Second)

	// Evidence that the check above had teeth: once those conferences have
	// ended, their ids are placed by the new ring and some now hash to n4.
	again := runUAC(t, "ended-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), held...), Rate: 60})
	again.requireAllSucceeded(t, active)
	rehashed := perNode(c.received(t, "INVITE"), again.callIDs("INVITE"))
	t.Logf("the %d ids placed again after their conferences ended: %v (n4 took %d that stickiness had kept)",
		active, rehashed, rehashed["n4"])
}
