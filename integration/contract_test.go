package integration

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// placeRound dials every conference of confs once, conference i through
// instance (i+shift)%2, and waits for every call to end and its
// conference record to go, so the next round's placement is computed from
// the ring again, not read from a sticky record.
func (c *cluster) placeRound(t *testing.T, name string, confs []string, shift int) {
	t.Helper()
	var byInst [2][]string
	for i, id := range confs {
		byInst[(i+shift)%2] = append(byInst[(i+shift)%2], id)
	}
	var runs []*uacRun
	for i, s := range c.inst[:2] {
		runs = append(runs, startUAC(t, fmt.Sprintf("%s-%s", name, s.name), uac{Scenario: "uac_call.xml",
			Target: s.sipAddr(), Rows: callRows(s.sipAddr(), byInst[i]...), Rate: 100}))
	}
	for i, r := range runs {
		r.wait().requireAllSucceeded(t, len(byInst[i]))
	}
	c.waitNoConferences(10 * time.Second)
}

// agreeOnPlacements checks that each conference reached exactly one node
// over every round so far (each round dialled it through the other
// instance than the round before), and returns the conferences per node.
func (c *cluster) agreeOnPlacements(t *testing.T, confs []string, rounds int) map[string]map[string]int {
	t.Helper()
	place := c.placements(t)
	perNode := map[string]map[string]int{}
	split := 0
	for _, id := range confs {
		nodes := place[id]
		total := 0
		for n, k := range nodes {
			total += k
			if perNode[n] == nil {
				perNode[n] = map[string]int{}
			}
			perNode[n][id] = k
		}
		if len(nodes) != 1 || total != rounds {
			split++
			if split <= 5 {
				t.Errorf("conference %s: INVITEs per node %v over %d rounds through alternating instances, want all on one node", id, nodes, rounds)
			}
		}
	}
	if split > 0 {
		t.Fatalf("%d of %d conferences were placed differently by the two instances", split, len(confs))
	}
	return perNode
}

// Issue 9 item 2: the instances share one Redis contract, each read
// through its own single watcher; they still agree on every placement, and
// after an operator change (a plain redis-cli HSET, nothing published) they
// agree again on the new ring.
func TestContract_TwoInstancesAgreeOnEveryPlacement(t *testing.T) {
	c := newCluster(t, twoInstances, threeNodes)
	a, b := c.inst[0], c.inst[1]
	confs := ids("agree", 200)

	c.placeRound(t, "r1", confs, 0)
	c.placeRound(t, "r2", confs, 1) // each conference now through the other instance
	spread := c.agreeOnPlacements(t, confs, 2)
	for _, n := range threeNodes {
		if len(spread[n]) == 0 {
			t.Errorf("node %s got none of 200 conferences: %v", n, keysOf(spread))
		}
	}
	t.Logf("200 conferences, dialled through A then B (and B then A): %d/%d/%d on n1/n2/n3, none split",
		len(spread["n1"]), len(spread["n2"]), len(spread["n3"]))

	// Weight and maintenance changed with plain HSETs: both instances
	// follow within the 1 s of SPEC §2 and agree again.
	ctx := context.Background()
	if err := c.rdb.HSet(ctx, "sipedge:node:n1", "weight", "300").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.rdb.HSet(ctx, "sipedge:node:n2", "maintenance", "1").Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*sipedge{a, b} {
		s.waitRing(t, 2*time.Second, "n1", "n3")
	}
	confs2 := ids("agree-after", 200)
	c.placeRound(t, "r3", confs2, 0)
	c.placeRound(t, "r4", confs2, 1)
	spread2 := c.agreeOnPlacements(t, confs2, 2)
	if len(spread2["n2"]) > 0 {
		t.Errorf("%d new conferences placed on n2 in maintenance", len(spread2["n2"]))
	}
	if len(spread2["n1"]) <= len(spread2["n3"]) {
		t.Errorf("n1 at weight 300 got %d conferences, n3 at 100 got %d: want n1 to get more", len(spread2["n1"]), len(spread2["n3"]))
	}
	t.Logf("after n1 weight 300 and n2 maintenance: %d/%d/%d on n1/n2/n3, none split",
		len(spread2["n1"]), len(spread2["n2"]), len(spread2["n3"]))
	for _, s := range []*sipedge{a, b} {
		st, _, err := s.svcNodeOf("n1")
		if err != nil {
			t.Fatal(err)
		}
		if st.Weight != 300 {
			t.Errorf("sipedge %s: /api/status n1 weight %v, want 300", s.name, st.Weight)
		}
	}
}

// One watcher with one subscription per process: ring, admission and media
// (anchoring is on by default) no longer subscribe each.
func TestContract_OneSubscriptionPerProcess(t *testing.T) {
	c := newCluster(t, twoInstances, []string{"n1"})
	ch := "sipedge:events"
	subs := func() int64 { return c.rdb.PubSubNumSub(context.Background(), ch).Val()[ch] }
	// Confnodes (sipp nodes here) do not subscribe: every subscriber is a sipedge.
	eventually(t, 5*time.Second, "2 subscriptions", func() string {
		if n := subs(); n != 2 {
			return fmt.Sprintf("PUBSUB NUMSUB %s = %d, want 2 (one per sipedge)", ch, n)
		}
		return ""
	})
	c.inst = append(c.inst, c.startSipedge("C"))
	c.inst[2].waitRing(t, 5*time.Second, "n1")
	eventually(t, 5*time.Second, "3 subscriptions", func() string {
		if n := subs(); n != 3 {
			return fmt.Sprintf("PUBSUB NUMSUB %s = %d with 3 instances, want 3", ch, n)
		}
		return ""
	})
	// The one subscription still applies sipedgectl's published changes
	// (maintenance via the CLI) on every instance.
	c.ctlOK("nodes", "maintenance", "on", "n1")
	for _, s := range c.inst {
		s.waitNodeState(t, 2*time.Second, "n1", "maintenance", nil)
	}
}
