package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Issue 3, item 9 d–h: media nodes out of service (SPEC §4).

// nodeCalls is sipedge:node_calls[node].
func (e *env) nodeCalls(node string) string {
	return e.readField("sipedge:node_calls", node)
}

// requireNoneOn checks that no conference of confs reached node.
func requireNoneOn(t *testing.T, c *cluster, node string, res uacResult) map[string]int {
	t.Helper()
	spread := perNode(c.received(t, "INVITE"), res.callIDs("INVITE"))
	if spread[node] != 0 {
		t.Errorf("%s: %d new conferences went to out-of-service node %s (spread %v)", res.Name, spread[node], node, spread)
	}
	return spread
}

// 9d: maintenance on the node of a running conference. New conferences go
// to the other nodes, a new participant of the running conference still
// reaches its node, and the node goes draining → maintenance when its last
// call ends.
func TestNodeMaintenance_MidConference_StickyThenMaintenance(t *testing.T) {
	c := newCluster(t, twoInstances, threeNodes)
	a, b := c.inst[0], c.inst[1]
	const conf = "t9d-running"

	held := startUAC(t, "held", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), conf, conf), Rate: 20, Hold: 6 * time.Second})
	var node string
	eventually(t, 5*time.Second, "running conference placed", func() string {
		node = c.confNode(conf)
		if node == "" || c.nodeCalls(node) != "2" {
			return fmt.Sprintf("node %q, node_calls %q", node, c.nodeCalls(node))
		}
		return ""
	})
	c.writeHash("sipedge:node:"+node, "maintenance", "1")
	for _, s := range c.inst {
		got := s.waitNodeState(t, 3*time.Second, node, "draining", nil)
		if got.InService || got.Load != 1 || got.OutReason != "manual maintenance" {
			t.Errorf("sipedge %s: draining node %+v, want out of service, load 1, reason manual maintenance", s.name, got)
		}
	}

	follow := c.startCtl("drain", "--wait", "--timeout", "30s", node)

	fresh := runUAC(t, "new-confs", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), ids("t9d-new", 30)...), Rate: 30, Hold: 20 * time.Millisecond})
	fresh.requireAllSucceeded(t, 30)
	t.Logf("new conferences per node while %s drains: %v", node, requireNoneOn(t, c, node, fresh))

	joiner := runUAC(t, "joiner", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: callRows(b.sipAddr(), conf), Hold: 20 * time.Millisecond})
	joiner.requireAllSucceeded(t, 1)
	if got := perNode(c.received(t, "INVITE"), joiner.callIDs("INVITE")); got[node] != 1 {
		t.Errorf("new participant of the running conference reached %v, want its node %s", got, node)
	}

	held.wait().requireAllSucceeded(t, 2)
	for _, s := range c.inst {
		s.waitNodeState(t, 3*time.Second, node, "maintenance", func(n svcNode) string {
			if n.Calls != 0 {
				return fmt.Sprintf("%d calls", n.Calls)
			}
			return ""
		})
	}
	if err := follow.wait(t, 10*time.Second); err != nil {
		t.Errorf("sipedgectl drain --wait %s: %v\n%s%s", node, err, follow.stdout.String(), follow.stderr.String())
	}
	if out := follow.stdout.String(); !strings.Contains(out, node) || !strings.Contains(out, "maintenance") {
		t.Errorf("sipedgectl drain --wait %s printed no progress naming the node and its end state:\n%s", node, out)
	}
	if got := c.ctlStatusNodeOf(node); got.State != "maintenance" || got.InService {
		t.Errorf("sipedgectl status: node %+v, want state maintenance, not in service", got)
	}
}

// 9e: a drain that outlives drain_timeout ends the remaining calls with a
// BYE on both legs carrying a Reason, and the node enters maintenance.
func TestNodeDrainTimeout_ByeWithReason_ThenMaintenance(t *testing.T) {
	c := newCluster(t, []string{"A"}, []string{"n1", "n2"})
	a := c.inst[0]
	const conf = "t9e-conf"
	const drainTimeout = 3 * time.Second
	c.writeSettings("drain_timeout", "3")

	run := startUAC(t, "until-bye", uac{Scenario: "uac_call_until_drain_bye.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), conf, conf, conf), Rate: 20, Timeout: 40 * time.Second})
	var node string
	eventually(t, 5*time.Second, "calls established", func() string {
		node = c.confNode(conf)
		if node == "" || c.nodeCalls(node) != "3" {
			return fmt.Sprintf("node %q, node_calls %q", node, c.nodeCalls(node))
		}
		return ""
	})
	c.ctlOK("nodes", "maintenance", "on", node)
	drainFrom := time.Now()
	a.waitNodeState(t, 2*time.Second, node, "draining", nil)

	res := run.wait()
	ended := time.Since(drainFrom)
	res.requireAllSucceeded(t, 3) // each caller got a BYE naming the drain timeout and answered 200
	if ended < drainTimeout {
		t.Errorf("calls ended %v after the drain began, before drain_timeout %v", ended, drainTimeout)
	}
	var nodeSide *sippNode
	for _, n := range c.nodes {
		if n.name == node {
			nodeSide = n
		}
	}
	byes := map[string]sipMsg{}
	for _, m := range nodeSide.received(t, "BYE") {
		byes[m.CallID()] = m
	}
	for _, id := range res.callIDs("INVITE") {
		m, ok := byes[id]
		if !ok {
			t.Errorf("node %s got no BYE for %s", node, id)
			continue
		}
		if r := m.Header("reason"); !strings.Contains(r, "drain timeout") || !strings.HasPrefix(r, "SIP;cause=") {
			t.Errorf("BYE to node for %s has Reason %q, want SIP;cause=…;text=\"drain timeout\"", id, r)
		}
	}
	a.waitNodeState(t, 3*time.Second, node, "maintenance", nil)
	c.waitNoConferences(3 * time.Second)
}

// 9f: a node returning from maintenance ramps its weight over slow_start:
// right after the return it takes a small share of new conferences, after
// the window its full share.
func TestNodeRestore_SlowStart_ShareGrows(t *testing.T) {
	c := newCluster(t, []string{"A"}, threeNodes)
	a := c.inst[0]
	const slowStart = 8 * time.Second
	c.writeSettings("slow_start", "8")
	const node = "n3"

	c.writeHash("sipedge:node:"+node, "maintenance", "1")
	a.waitNodeState(t, 3*time.Second, node, "maintenance", nil)
	c.writeHash("sipedge:node:"+node, "maintenance", "0")
	restored := time.Now()

	// Sample the effective weight while the first batch runs.
	var mu sync.Mutex
	var weights []float64
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil && time.Since(restored) < slowStart+2*time.Second {
			if n, _, err := a.svcNodeOf(node); err == nil && n.State == "normal" {
				mu.Lock()
				weights = append(weights, n.Effective)
				mu.Unlock()
			}
			time.Sleep(400 * time.Millisecond)
		}
	}()

	const batch = 60
	early := runUAC(t, "early", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("t9f-early", batch)...), Rate: 60, Hold: 10 * time.Millisecond})
	early.requireAllSucceeded(t, batch)
	earlyAt := time.Since(restored)

	a.waitNodeState(t, slowStart+3*time.Second, node, "normal", func(n svcNode) string {
		if n.Effective < 100 {
			return fmt.Sprintf("effective weight %v", n.Effective)
		}
		return ""
	})
	stop()
	wg.Wait()
	late := runUAC(t, "late", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("t9f-late", batch)...), Rate: 60, Hold: 10 * time.Millisecond})
	late.requireAllSucceeded(t, batch)

	invites := c.received(t, "INVITE")
	earlySpread, lateSpread := perNode(invites, early.callIDs("INVITE")), perNode(invites, late.callIDs("INVITE"))
	t.Logf("%s's share: %d/%d in the first %v of slow start (spread %v), %d/%d after it (spread %v); weights sampled %v",
		node, earlySpread[node], batch, earlyAt.Round(100*time.Millisecond), earlySpread, lateSpread[node], batch, lateSpread, weights)
	// Full share is 1/3 (20 of 60). In the first ~1.5 s of an 8 s ramp the
	// weight is below a fifth of full, so the share is far smaller.
	if earlySpread[node]*2 >= lateSpread[node] || lateSpread[node] < batch/6 {
		t.Errorf("%s took %d of the early and %d of the late conferences: no ramp", node, earlySpread[node], lateSpread[node])
	}
	mu.Lock()
	defer mu.Unlock()
	ramping := 0
	for i, w := range weights {
		if i > 0 && w < weights[i-1] {
			t.Errorf("effective weight went down during slow start: %v", weights)
			break
		}
		if w > 0 && w < 100 {
			ramping++
		}
	}
	if ramping < 3 {
		t.Errorf("effective weight samples %v: want several between 0 and 100 during the ramp", weights)
	}
}

// 9g: capable=0 forces maintenance; the manual flag cannot lift it, and the
// status says why. capable=1 returns the node.
func TestNodeNotCapable_ManualFlagIgnored(t *testing.T) {
	c := newCluster(t, []string{"A"}, []string{"n1", "n2"})
	a := c.inst[0]
	const node = "n2"
	c.writeHash("sipedge:node:"+node, "capable", "0", "maintenance", "1")
	a.waitNodeState(t, 3*time.Second, node, "maintenance", nil)

	c.ctlOK("nodes", "maintenance", "off", node)
	if got := c.readField("sipedge:node:"+node, "maintenance"); got != "0" {
		t.Fatalf("maintenance off left the flag at %q", got)
	}
	time.Sleep(time.Second) // two resync periods: the flag has been read
	n := a.waitNodeState(t, 3*time.Second, node, "maintenance", nil)
	if n.InService || n.OutReason != "forced maintenance (capable=0)" {
		t.Errorf("capable=0 node after maintenance off: %+v, want out of service with the forced reason", n)
	}
	if got := c.ctlStatusNodeOf(node); got.InService || !strings.Contains(got.OutReason, "capable=0") {
		t.Errorf("sipedgectl status: %+v, want the capable=0 reason", got)
	}
	res := runUAC(t, "while-forced", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("t9g", 20)...), Rate: 40, Hold: 10 * time.Millisecond})
	res.requireAllSucceeded(t, 20)
	requireNoneOn(t, c, node, res)

	c.writeHash("sipedge:node:"+node, "capable", "1")
	a.waitNodeState(t, 3*time.Second, node, "normal", func(n svcNode) string {
		if !n.InService {
			return "not in service"
		}
		return ""
	})
}

// 9h: maintenance survives restarts of both sipedge and the node: the
// flag lives in Redis, confnode does not reset it when it registers again.
func TestNodeMaintenance_SurvivesRestarts(t *testing.T) {
	e := newEnv(t)
	cn1, _ := e.startConfnode("cn1")
	e.startConfnode("cn2")
	a := e.startSipedge("A")
	a.waitRing(t, 5*time.Second, "cn1", "cn2")

	e.ctlOK("nodes", "maintenance", "on", "cn1")
	a.waitNodeState(t, 3*time.Second, "cn1", "maintenance", nil)

	a.proc.stop(3 * time.Second)
	cn1.stop(3 * time.Second)
	e.startConfnode("cn1")
	a = e.startSipedge("A")
	eventually(t, 5*time.Second, "confnode cn1 registered again", func() string {
		hb := e.readField("sipedge:node:cn1", "heartbeat")
		if hb == "" {
			return "no heartbeat"
		}
		return ""
	})
	n := a.waitNodeState(t, 5*time.Second, "cn1", "maintenance", func(n svcNode) string {
		if !n.Healthy {
			return "not healthy yet"
		}
		return ""
	})
	if n.InService || n.OutReason != "manual maintenance" || !n.Maintenance {
		t.Errorf("cn1 after restarts: %+v, want manual maintenance", n)
	}
	if got := e.readField("sipedge:node:cn1", "maintenance"); got != "1" {
		t.Errorf("sipedge:node:cn1 maintenance = %q after restarts, want 1", got)
	}

	res := runUAC(t, "after-restart", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("t9h", 10)...), Rate: 20, Hold: 10 * time.Millisecond})
	res.requireAllSucceeded(t, 10)
	placed := map[string]int{}
	for _, l := range a.logLines("new dialog admitted") {
		if m, _ := l["method"].(string); m == "INVITE" {
			node, _ := l["node"].(string)
			placed[node]++
		}
	}
	if placed["cn1"] != 0 || placed["cn2"] != 10 {
		t.Errorf("new conferences after restarts placed %v, want all 10 on cn2", placed)
	}
}

// 9e, drain_action keep: at drain_timeout the calls are left alone; the node
// stays draining until they end by themselves, then enters maintenance.
func TestNodeDrainTimeout_KeepAction_CallsContinue(t *testing.T) {
	c := newCluster(t, []string{"A"}, []string{"n1", "n2"})
	a := c.inst[0]
	const conf = "t9e-keep"
	c.writeSettings("drain_timeout", "1", "drain_action", "keep")

	held := startUAC(t, "held", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), conf), Hold: 4 * time.Second})
	var node string
	eventually(t, 5*time.Second, "call established", func() string {
		if node = c.confNode(conf); node == "" || c.nodeCalls(node) != "1" {
			return fmt.Sprintf("node %q", node)
		}
		return ""
	})
	c.writeHash("sipedge:node:"+node, "maintenance", "1")
	a.waitNodeState(t, 2*time.Second, node, "draining", nil)
	time.Sleep(2 * time.Second) // past drain_timeout
	a.waitNodeState(t, time.Second, node, "draining", func(n svcNode) string {
		if n.Calls != 1 {
			return fmt.Sprintf("%d calls", n.Calls)
		}
		return ""
	})
	held.wait().requireAllSucceeded(t, 1) // a BYE from sipedge would be unexpected and fail the call
	a.waitNodeState(t, 3*time.Second, node, "maintenance", nil)
}
