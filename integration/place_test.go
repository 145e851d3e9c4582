package integration

import (
	"fmt"
	"testing"
	"time"
)

// confOf maps the Call-IDs a run sent to the node each INVITE reached and
// its conference: conference -> node -> INVITEs.
func confOf(ds map[string]delivery, callIDs []string) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, id := range callIDs {
		d, ok := ds[id]
		if !ok {
			continue
		}
		conf := d.msg.RURIUser()
		if out[conf] == nil {
			out[conf] = map[string]int{}
		}
		out[conf][d.node]++
	}
	return out
}

// Issue 9 item 2 (README "Sticky placement without a round trip"): an
// instance that holds live legs of a conference answers its sticky
// placement locally, and two instances still never split a conference.
// Conferences are set up on n1/n2 through A; n3 is added, so the ring now
// places some of them on n3; more callers of each conference come through
// A and B (first without legs on B, then with): every one lands on the
// conference's node, and the instances with legs answered locally. Once
// every call ended, the same conference ids are placed by the ring again,
// some on n3.
func TestPlace_LocalStickyHoldsAcrossRingChangeAndTwoInstances(t *testing.T) {
	const n = 30
	c := newCluster(t, twoInstances, []string{"n1", "n2"})
	a, b := c.inst[0], c.inst[1]
	confs := ids("place", n)

	first := startUAC(t, "first-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), confs...), Rate: 60, Hold: 14 * time.Second, Timeout: 40 * time.Second})
	placed := map[string]string{}
	eventually(t, 5*time.Second, "every conference placed", func() string {
		for _, id := range confs {
			if placed[id] == "" {
				placed[id] = c.confNode(id)
			}
			if placed[id] == "" {
				return "no node for " + id
			}
		}
		return ""
	})

	// A node joins: the ring's choice changes for about a third of them.
	n3 := startSippNode(t, "n3")
	c.nodes = append(c.nodes, n3)
	c.registerNode("n3", n3.addr())
	c.publish()
	for _, s := range c.inst {
		s.waitRing(t, 5*time.Second, "n1", "n2", "n3")
	}
	waitPlacementIndex(t, c)
	localA0 := a.metricOr0(t, "sipedge_admission_sticky_lookups_total", map[string]string{"source": "local"})
	localB0 := b.metricOr0(t, "sipedge_admission_sticky_lookups_total", map[string]string{"source": "local"})
	redisB0 := b.metricOr0(t, "sipedge_admission_sticky_lookups_total", map[string]string{"source": "redis"})

	// Callers through B (no legs there yet: Redis answers) stay up; a
	// joiner of each conference through A (legs held: local answer).
	heldB := startUAC(t, "held-B", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), confs...), Rate: 60, Hold: 6 * time.Second, Timeout: 30 * time.Second})
	joinA := runUAC(t, "join-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), confs...), Rate: 60, Hold: 20 * time.Millisecond})
	joinA.requireAllSucceeded(t, n)
	eventually(t, 5*time.Second, "B holds a leg of every conference", func() string {
		if got := b.metricOr0(t, "sipedge_dialogs_active", nil); got < n {
			return fmt.Sprintf("%v dialogs on B", got)
		}
		return ""
	})
	time.Sleep(300 * time.Millisecond) // B's count writes return the placements
	joinB := runUAC(t, "join-B", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), confs...), Rate: 60, Hold: 20 * time.Millisecond})
	joinB.requireAllSucceeded(t, n)

	localA := a.metricOr0(t, "sipedge_admission_sticky_lookups_total", map[string]string{"source": "local"}) - localA0
	localB := b.metricOr0(t, "sipedge_admission_sticky_lookups_total", map[string]string{"source": "local"}) - localB0
	redisB := b.metricOr0(t, "sipedge_admission_sticky_lookups_total", map[string]string{"source": "redis"}) - redisB0
	if localA < n {
		t.Errorf("A answered %v of %d joiners' placements locally, want all (it holds legs of every conference)", localA, n)
	}
	if redisB < n {
		t.Errorf("B asked Redis %v times for its first %d callers, want every one (no legs held there)", redisB, n)
	}
	if localB < n {
		t.Errorf("B answered %v of %d joiners' placements locally, want all (it holds legs now)", localB, n)
	}

	first.wait().requireAllSucceeded(t, n)
	heldB.wait().requireAllSucceeded(t, n)
	c.waitNoConferences(10 * time.Second)

	ds := c.received(t, "INVITE")
	for _, run := range []uacResult{joinA, joinB} {
		for conf, nodes := range confOf(ds, run.callIDs("INVITE")) {
			if len(nodes) != 1 || nodes[placed[conf]] != 1 {
				t.Errorf("%s: conference %s reached %v, want its node %s", run.Name, conf, nodes, placed[conf])
			}
		}
	}
	for conf, nodes := range confOf(ds, append(first.wait().callIDs("INVITE"), heldB.wait().callIDs("INVITE")...)) {
		if len(nodes) != 1 || nodes[placed[conf]] != 2 {
			t.Errorf("conference %s: held calls reached %v, want both on %s", conf, nodes, placed[conf])
		}
	}

	// Ended: the same ids are new conferences, placed by the new ring (and
	// the two instances agree on it).
	againA := runUAC(t, "again-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), confs...), Rate: 60, Hold: 20 * time.Millisecond})
	againA.requireAllSucceeded(t, n)
	c.waitNoConferences(10 * time.Second)
	againB := runUAC(t, "again-B", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), confs...), Rate: 60, Hold: 20 * time.Millisecond})
	againB.requireAllSucceeded(t, n)
	ds = c.received(t, "INVITE")
	viaA, viaB := confOf(ds, againA.callIDs("INVITE")), confOf(ds, againB.callIDs("INVITE"))
	moved := 0
	for _, conf := range confs {
		if len(viaA[conf]) != 1 || len(viaB[conf]) != 1 {
			t.Errorf("conference %s placed anew: via A %v, via B %v, want one node each", conf, viaA[conf], viaB[conf])
			continue
		}
		for node := range viaA[conf] {
			if viaB[conf][node] != 1 {
				t.Errorf("conference %s placed anew on %s via A and %v via B", conf, node, viaB[conf])
			}
			if node != placed[conf] {
				moved++
				if node != "n3" {
					t.Errorf("conference %s moved from %s to %s, want only moves to the new node n3", conf, placed[conf], node)
				}
			}
		}
	}
	if moved == 0 {
		t.Fatalf("no conference of %d is placed differently by the new ring: the sticky placement was never tested against the ring", n)
	}
	t.Logf("%d of %d conferences stayed on their node while the ring placed them on n3; local answers A %v B %v, Redis B %v",
		moved, n, localA, localB, redisB)
}

// waitPlacementIndex waits until every instance's placement index is
// complete (a scan of the conference keys since it subscribed).
func waitPlacementIndex(t *testing.T, c *cluster) {
	t.Helper()
	for _, s := range c.inst {
		eventually(t, 15*time.Second, s.name+"'s placement index ready", func() string {
			if got := s.metricOr0(t, "sipedge_admission_placement_index_ready", nil); got != 1 {
				return fmt.Sprintf("sipedge_admission_placement_index_ready = %v", got)
			}
			return ""
		})
	}
}

// Issue 9 item 2 (README "New conferences placed without a round trip"):
// with its placement index complete, an instance places a conference
// nobody placed yet by the ring without asking Redis; the other instance,
// told of the placement on the placements channel, asks Redis for the
// same conference and sends its callers to the same node.
func TestPlace_NewConferencesPlacedWithoutARedisLookup(t *testing.T) {
	const n = 30
	c := newCluster(t, twoInstances, threeNodes)
	a, b := c.inst[0], c.inst[1]
	waitPlacementIndex(t, c)
	lookups := func(s *sipedge, source string) float64 {
		return s.metricOr0(t, "sipedge_admission_sticky_lookups_total", map[string]string{"source": source})
	}
	unplacedB0, redisB0, redisA0 := lookups(b, "unplaced"), lookups(b, "redis"), lookups(a, "redis")

	confs := ids("unplaced", n)
	heldB := startUAC(t, "new-B", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), confs...), Rate: 60, Hold: 6 * time.Second, Timeout: 30 * time.Second})
	eventually(t, 5*time.Second, "every conference placed", func() string {
		for _, id := range confs {
			if c.confNode(id) == "" {
				return "no node for " + id
			}
		}
		return ""
	})
	time.Sleep(300 * time.Millisecond) // the announcements reach A
	joinA := runUAC(t, "join-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), confs...), Rate: 60, Hold: 20 * time.Millisecond})
	joinA.requireAllSucceeded(t, n)
	heldB.wait().requireAllSucceeded(t, n)

	if got := lookups(b, "unplaced") - unplacedB0; got != n {
		t.Errorf("B placed %v of %d new conferences without a lookup, want all", got, n)
	}
	if got := lookups(b, "redis") - redisB0; got != 0 {
		t.Errorf("B asked Redis %v times for %d conferences nobody had placed, want 0", got, n)
	}
	if got := lookups(a, "redis") - redisA0; got != n {
		t.Errorf("A asked Redis %v times for the %d conferences B had placed, want every one", got, n)
	}
	ds := c.received(t, "INVITE")
	byConf := confOf(ds, append(heldB.wait().callIDs("INVITE"), joinA.callIDs("INVITE")...))
	for _, conf := range confs {
		if nodes := byConf[conf]; len(nodes) != 1 {
			t.Errorf("conference %s split over %v", conf, nodes)
		}
	}
	c.waitNoConferences(10 * time.Second)
}
