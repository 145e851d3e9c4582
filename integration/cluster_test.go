package integration

import (
	"fmt"
	"testing"
	"time"
)

// cluster is the usual end-to-end setup: a Redis, sipp media nodes
// registered in it, and sipedge instances sharing it.
type cluster struct {
	*env
	inst  []*sipedge
	nodes []*sippNode
}

// newCluster starts nodes first (so the instances find them at start-up),
// then the instances, and waits until every instance has every node in its
// ring.
func newCluster(t *testing.T, instances, nodes []string) *cluster {
	t.Helper()
	binary(t, "sipedge") // fail before starting anything if it did not build
	c := &cluster{env: newEnv(t)}
	for _, n := range nodes {
		c.nodes = append(c.nodes, c.startNode(n))
	}
	for _, name := range instances {
		c.inst = append(c.inst, c.startSipedge(name))
	}
	for _, s := range c.inst {
		s.waitRing(t, 5*time.Second, nodes...)
	}
	return c
}

// instanceOf names the sipedge instance whose address is the sent-by of
// via ("" if none).
func (c *cluster) instanceOf(via string) string {
	hp := viaHostPort(via)
	for _, s := range c.inst {
		if hp == s.sipAddr() {
			return s.name
		}
	}
	return ""
}

// delivery is one request as a node received it.
type delivery struct {
	node   string
	msg    sipMsg
	viaIns string // the sipedge instance in its top Via
}

// received collects the distinct requests of method every node received,
// keyed by Call-ID. A Call-ID seen by two nodes is a test failure, unless
// one of them is dead: a new call fails over from a dead node to the next
// one (README "Node failover"), and the live node's copy is kept.
func (c *cluster) received(t testing.TB, method string) map[string]delivery {
	t.Helper()
	out := map[string]delivery{}
	dead := map[string]bool{}
	for _, n := range c.nodes {
		dead[n.name] = n.proc.exited()
	}
	for _, n := range c.nodes {
		for _, m := range n.received(t, method) {
			if prev, ok := out[m.CallID()]; ok && prev.node != n.name {
				if dead[n.name] {
					continue
				}
				if !dead[prev.node] {
					t.Errorf("%s for Call-ID %s reached two nodes: %s and %s", method, m.CallID(), prev.node, n.name)
				}
			}
			d := delivery{node: n.name, msg: m}
			if v := m.Vias(); len(v) > 0 {
				d.viaIns = c.instanceOf(v[0])
			}
			out[m.CallID()] = d
		}
	}
	return out
}

// placements maps conference id → node → INVITEs received for it.
func (c *cluster) placements(t testing.TB) map[string]map[string]int {
	t.Helper()
	out := map[string]map[string]int{}
	for _, d := range c.received(t, "INVITE") {
		id := d.msg.RURIUser()
		if out[id] == nil {
			out[id] = map[string]int{}
		}
		out[id][d.node]++
	}
	return out
}

// perNode counts deliveries by node, for logs and spread checks.
func perNode(ds map[string]delivery, callIDs []string) map[string]int {
	out := map[string]int{}
	for _, id := range callIDs {
		if d, ok := ds[id]; ok {
			out[d.node]++
		}
	}
	return out
}

// requireDelivered checks that every Call-ID in callIDs reached a node
// through instance via (top Via), and returns how many each node got.
func requireDelivered(t testing.TB, ds map[string]delivery, method string, callIDs []string, via string) map[string]int {
	t.Helper()
	missing, wrongVia := 0, 0
	var example string
	for _, id := range callIDs {
		d, ok := ds[id]
		switch {
		case !ok:
			missing++
			example = fmt.Sprintf("Call-ID %s reached no node", id)
		case d.viaIns != via:
			wrongVia++
			example = fmt.Sprintf("Call-ID %s reached %s with Vias %v", id, d.node, d.msg.Vias())
		}
	}
	if missing > 0 || wrongVia > 0 {
		t.Fatalf("%s: of %d sent, %d reached no node and %d did not come from sipedge %s (e.g. %s)",
			method, len(callIDs), missing, wrongVia, via, example)
	}
	return perNode(ds, callIDs)
}
