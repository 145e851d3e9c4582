package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Issue 8, item 8: Redis faults.

// faultRedis is a redis-server the test can kill and start again on the
// same port, empty or from its append-only file.
type faultRedis struct {
	t    *testing.T
	port int
	dir  string
	aof  bool
	proc *proc
}

func (r *faultRedis) addr() string { return loopback(r.port) }

func (r *faultRedis) start() {
	r.t.Helper()
	server := requireTool(r.t, "redis-server")
	appendonly := "no"
	if r.aof {
		appendonly = "yes"
	}
	r.proc = startProc(r.t, "redis", server, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", appendonly, "--dir", r.dir, "--protected-mode", "yes",
		"--enable-debug-command", "yes")
	rdb := redis.NewClient(&redis.Options{Addr: r.addr(), DialTimeout: time.Second})
	defer rdb.Close()
	eventually(r.t, 10*time.Second, "redis-server answers PING", func() string {
		if r.proc.exited() {
			r.t.Fatalf("redis-server exited: %v\n%s", r.proc.waitErr, r.proc.log())
		}
		if err := rdb.Ping(context.Background()).Err(); err != nil {
			return err.Error()
		}
		return ""
	})
}

// kill ends Redis at once, as a crash does (nothing is flushed beyond what
// appendfsync everysec already wrote).
func (r *faultRedis) kill() { r.proc.kill() }

// wipe removes the persisted data: the next start is empty.
func (r *faultRedis) wipe() {
	r.t.Helper()
	entries, _ := os.ReadDir(r.dir)
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(r.dir, e.Name())); err != nil {
			r.t.Fatal(err)
		}
	}
}

// newFaultCluster is newCluster on a Redis the test controls.
func newFaultCluster(t *testing.T, aof bool, instances, nodes []string, extra ...string) (*cluster, *faultRedis) {
	t.Helper()
	binary(t, "sipedge")
	requireTool(t, "sipp")
	r := &faultRedis{t: t, port: freePort(t), dir: t.TempDir(), aof: aof}
	r.start()
	rdb := redis.NewClient(&redis.Options{Addr: r.addr(), DialTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	c := &cluster{env: &env{t: t, redisAddr: r.addr(), rdb: rdb}}
	for _, n := range nodes {
		c.nodes = append(c.nodes, c.startNode(n))
	}
	for _, name := range instances {
		c.inst = append(c.inst, c.startSipedge(name, extra...))
	}
	for _, s := range c.inst {
		s.waitRing(t, 5*time.Second, nodes...)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpCounts()
		}
	})
	return c, r
}

// reregister puts the sipp nodes back, as a confnode does by itself at
// its next heartbeat.
func (c *cluster) reregister() {
	for _, n := range c.nodes {
		c.registerNode(n.name, n.addr())
	}
}

// heldSet is a known set of long calls: the exact counts the cluster must
// show while they are up and every shorter call has ended.
type heldSet struct {
	confs []string
	per   int
	run   *uacRun
}

func startHeld(t *testing.T, s *sipedge, prefix string, confs, per int, hold time.Duration) heldSet {
	t.Helper()
	h := heldSet{confs: ids(prefix, confs), per: per}
	var rows []string
	for i := 0; i < per; i++ {
		rows = append(rows, h.confs...)
	}
	h.run = startUAC(t, prefix, uac{Scenario: "uac_call.xml", Target: s.sipAddr(),
		Rows: callRows(s.sipAddr(), rows...), Rate: 50, Hold: hold, Timeout: hold + 60*time.Second})
	return h
}

// countsExact reports "" when Redis shows exactly the held set: every
// conference key of it with per dialogs and no other conference key,
// node_calls summing to all of them on the nodes their keys name, and
// instance_calls naming only inst with all of them.
func (c *cluster) countsExact(h heldSet, inst string) string {
	ctx := context.Background()
	want := map[string]int{}
	keys, err := c.rdb.Keys(ctx, "sipedge:conf:*").Result()
	if err != nil {
		return err.Error()
	}
	if len(keys) != len(h.confs) {
		sort.Strings(keys)
		return fmt.Sprintf("%d conference keys, want %d (%v)", len(keys), len(h.confs), keys[:min(len(keys), 8)])
	}
	for _, id := range h.confs {
		f, err := c.rdb.HGetAll(ctx, "sipedge:conf:"+id).Result()
		if err != nil {
			return err.Error()
		}
		if f["dialogs"] != strconv.Itoa(h.per) || f["node"] == "" {
			return fmt.Sprintf("conf %s = %v, want dialogs %d and a node", id, f, h.per)
		}
		want[f["node"]] += h.per
	}
	nc, err := c.rdb.HGetAll(ctx, "sipedge:node_calls").Result()
	if err != nil {
		return err.Error()
	}
	if len(nc) != len(want) {
		return fmt.Sprintf("node_calls %v, want %v", nc, want)
	}
	for n, v := range want {
		if nc[n] != strconv.Itoa(v) {
			return fmt.Sprintf("node_calls %v, want %v", nc, want)
		}
	}
	ic, err := c.rdb.HGetAll(ctx, "sipedge:instance_calls").Result()
	if err != nil {
		return err.Error()
	}
	if len(ic) != 1 || ic[inst] != strconv.Itoa(len(h.confs)*h.per) {
		return fmt.Sprintf("instance_calls %v, want %s=%d only", ic, inst, len(h.confs)*h.per)
	}
	return ""
}

// dumpCounts logs the shares and a few conference keys (on failure).
func (c *cluster) dumpCounts() {
	ctx := context.Background()
	for _, k := range []string{"sipedge:calls:A", "sipedge:calls:B", "sipedge:node_calls", "sipedge:instance_calls"} {
		m, _ := c.rdb.HGetAll(ctx, k).Result()
		c.t.Logf("%s = %v", k, m)
	}
	for _, k := range []string{"sipedge:ended:A", "sipedge:ended:B"} {
		n, _ := c.rdb.SCard(ctx, k).Result()
		c.t.Logf("%s: %d notes", k, n)
	}
	keys := c.confKeys()
	sort.Strings(keys)
	for _, k := range keys[:min(len(keys), 6)] {
		m, _ := c.rdb.HGetAll(ctx, k).Result()
		c.t.Logf("%s = %v", k, m)
	}
}

// countsEmpty reports "" when no count is left at all.
func (c *cluster) countsEmpty() string {
	ctx := context.Background()
	for _, k := range []string{"sipedge:node_calls", "sipedge:instance_calls"} {
		if m, err := c.rdb.HGetAll(ctx, k).Result(); err != nil || len(m) > 0 {
			return fmt.Sprintf("%s = %v (%v)", k, m, err)
		}
	}
	if k := c.confKeys(); len(k) > 0 {
		return fmt.Sprintf("%d conference keys left, e.g. %v", len(k), k[:min(len(k), 5)])
	}
	return ""
}

// loadRows spreads n calls over confs conferences.
func loadRows(byeTo, prefix string, n, confs int) [][]string {
	all := ids(prefix, confs)
	rows := make([]string, n)
	for i := range rows {
		rows[i] = all[i%confs]
	}
	return callRows(byeTo, rows...)
}

// TestRedisFault_RestartedEmptyUnderLoad: Redis is killed and restarted
// empty while 100 calls/s pass (half of them ending through the other
// instance). No call fails: the instances keep the last known ring while
// the node set is empty, until the nodes register again. Afterwards every
// count is exact again within seconds: the held calls' conferences,
// node_calls and instance_calls, and nothing at all once they end. The
// route secret is back in Redis, so an instance started now shares it and
// the BYEs of its calls pass another instance.
func TestRedisFault_RestartedEmptyUnderLoad(t *testing.T) {
	c, r := newFaultCluster(t, false, twoInstances, threeNodes)
	a, b := c.inst[0], c.inst[1]
	ctx := context.Background()
	secret, err := c.rdb.Get(ctx, "sipedge:route_secret").Result()
	if err != nil {
		t.Fatal(err)
	}

	held := startHeld(t, a, "rf-held", 5, 4, 30*time.Second)
	eventually(t, 10*time.Second, "held calls counted", func() string { return c.countsExact(held, "A") })

	const perRun = 750 // 2 × 50 calls/s for 15 s
	viaA := startUAC(t, "load-a", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: loadRows(b.sipAddr(), "rf-la", perRun, 40), Rate: 50, Hold: time.Second})
	viaB := startUAC(t, "load-b", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: loadRows(b.sipAddr(), "rf-lb", perRun, 40), Rate: 50, Hold: time.Second})
	time.Sleep(4 * time.Second)
	r.kill()
	t.Log("redis killed under load")
	time.Sleep(time.Second)
	r.start()
	t.Log("redis restarted empty")
	for _, s := range c.inst {
		if m, _, err := s.ringMembers(); err != nil || len(m) != len(threeNodes) {
			t.Errorf("sipedge %s ring right after the empty restart: %v (%v), want the last known %v", s.name, keysOf(m), err, threeNodes)
		}
	}
	time.Sleep(3 * time.Second) // nodes register again at their next heartbeat
	c.reregister()

	ra, rb := viaA.wait(), viaB.wait()
	ra.requireAllSucceeded(t, perRun)
	rb.requireAllSucceeded(t, perRun)
	start := time.Now()
	eventually(t, 10*time.Second, "counts exact after the empty restart", func() string { return c.countsExact(held, "A") })
	t.Logf("counts exact %v after the load ended", time.Since(start).Round(time.Millisecond))
	if got, err := c.rdb.Get(ctx, "sipedge:route_secret").Result(); err != nil || got != secret {
		t.Errorf("route secret after the empty restart = %q (%v), want the one the instances hold", got, err)
	}
	if n := len(a.logLines("media node set is empty")); n == 0 {
		t.Errorf("sipedge A did not report the empty node set")
	}
	// An instance started now shares the secret: the BYEs of its calls
	// pass A.
	late := c.startSipedge("C")
	late.waitRing(t, 5*time.Second, threeNodes...)
	runUAC(t, "via-late", uac{Scenario: "uac_call.xml", Target: late.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("rf-late", 10)...), Hold: 20 * time.Millisecond}).requireAllSucceeded(t, 10)

	held.run.wait().requireAllSucceeded(t, len(held.confs)*held.per)
	eventually(t, 10*time.Second, "no count left", c.countsEmpty)
}

// TestRedisFault_Outage10sRestoredFromAOF: Redis is killed for 10 s under
// load and restarted from its append-only file, with the counts it had
// before. /readyz says 503 (with the reason) during the outage and 200
// after; the metrics show Redis down and stale. Every count is exact
// afterwards, and a node then put into maintenance with no call up reaches
// maintenance.
func TestRedisFault_Outage10sRestoredFromAOF(t *testing.T) {
	// Every BYE of the load goes through the other instance, so during the
	// outage the owner cannot learn of the ends (the end notes wait in the
	// relaying instance until Redis is back) and keeps their relay ports:
	// about 500 calls' worth, the default per-source port cap. The cap is
	// the flood drill's subject, not this one's.
	c, r := newFaultCluster(t, true, twoInstances, threeNodes, "--source-ports", "0")
	a, b := c.inst[0], c.inst[1]

	held := startHeld(t, a, "aof-held", 5, 3, 35*time.Second)
	eventually(t, 10*time.Second, "held calls counted", func() string { return c.countsExact(held, "A") })

	const perRun = 1000 // 50 calls/s for 20 s
	load := startUAC(t, "load", uac{Scenario: "uac_call.xml", Target: b.sipAddr(),
		Rows: loadRows(a.sipAddr(), "aof-l", perRun, 30), Rate: 50, Hold: 1500 * time.Millisecond})
	time.Sleep(3 * time.Second)
	r.kill()
	killed := time.Now()
	t.Log("redis killed under load for 10 s")
	for _, s := range c.inst {
		s.waitReadyz(t, 3*time.Second, http.StatusServiceUnavailable)
		if _, body, _ := s.get("/readyz"); !strings.Contains(body, "redis") {
			t.Errorf("sipedge %s /readyz during the outage says %q, want the Redis reason", s.name, body)
		}
		if up := s.metric(t, "sipedge_redis_up", nil); up != 0 {
			t.Errorf("sipedge %s: sipedge_redis_up = %v during the outage", s.name, up)
		}
	}
	time.Sleep(10*time.Second - time.Since(killed))
	for _, s := range c.inst {
		if st := s.metric(t, "sipedge_redis_staleness_seconds", nil); st < 5 {
			t.Errorf("sipedge %s: sipedge_redis_staleness_seconds = %v after ~10 s down", s.name, st)
		}
	}
	r.start()
	t.Log("redis restarted from its AOF")
	for _, s := range c.inst {
		s.waitReadyz(t, 5*time.Second, http.StatusOK)
	}
	load.wait().requireAllSucceeded(t, perRun)
	eventually(t, 10*time.Second, "counts exact after the AOF restart", func() string { return c.countsExact(held, "A") })

	held.run.wait().requireAllSucceeded(t, len(held.confs)*held.per)
	eventually(t, 10*time.Second, "no count left", c.countsEmpty)

	node := threeNodes[0]
	c.writeHash("sipedge:node:"+node, "maintenance", "1")
	for _, s := range c.inst {
		s.waitNodeState(t, 5*time.Second, node, "maintenance", func(n svcNode) string {
			if n.Calls != 0 {
				return fmt.Sprintf("%d calls", n.Calls)
			}
			return ""
		})
	}
}

// TestRedisFault_StallBoundsCallSetup: Redis stalled (DEBUG SLEEP 2, then
// CLIENT PAUSE 3000) while calls to new conferences keep coming: no call
// set-up waits on Redis beyond redis_timeout (250 ms), so every one is
// answered well within 1 s, and /readyz reports the stall.
func TestRedisFault_StallBoundsCallSetup(t *testing.T) {
	c, r := newFaultCluster(t, false, []string{"A"}, threeNodes)
	a := c.inst[0]
	ctl := redis.NewClient(&redis.Options{Addr: r.addr(), ReadTimeout: 10 * time.Second})
	defer ctl.Close()

	for _, stall := range []struct {
		name string
		cmd  []any
		d    time.Duration
	}{
		{"DEBUG SLEEP 2", []any{"DEBUG", "SLEEP", "2"}, 2 * time.Second},
		{"CLIENT PAUSE 3000", []any{"CLIENT", "PAUSE", "3000"}, 3 * time.Second},
	} {
		t.Run(stall.name, func(t *testing.T) {
			var mu sync.Mutex
			var setups []time.Duration
			var wg sync.WaitGroup
			stop := make(chan struct{})
			sawNotReady := make(chan bool, 1)
			for w := 0; w < 4; w++ {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						start := time.Now()
						call := startRawCall(t, a.sipAddr(), "stall-"+svcTag())
						d := time.Since(start)
						call.bye(a.sipAddr())
						mu.Lock()
						setups = append(setups, d)
						mu.Unlock()
						time.Sleep(40 * time.Millisecond)
					}
				})
			}
			go func() {
				for end := time.Now().Add(stall.d + time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
					if a.readyz() == http.StatusServiceUnavailable {
						sawNotReady <- true
						return
					}
				}
				sawNotReady <- false
			}()
			time.Sleep(500 * time.Millisecond)
			began := time.Now()
			if err := ctl.Do(context.Background(), stall.cmd...).Err(); err != nil {
				t.Fatalf("%s: %v", stall.name, err)
			}
			if since := time.Since(began); since < stall.d-200*time.Millisecond && stall.cmd[0] == "DEBUG" {
				t.Fatalf("%s returned after %v: Redis did not stall", stall.name, since)
			}
			time.Sleep(stall.d + time.Second)
			close(stop)
			wg.Wait()
			if !<-sawNotReady {
				t.Errorf("/readyz never said 503 during %s", stall.name)
			}
			t.Logf("%s: %d call set-ups, %s", stall.name, len(setups), durStats(setups))
			if len(setups) < 10 {
				t.Fatalf("only %d calls set up around the stall", len(setups))
			}
			for _, d := range setups {
				if d >= time.Second {
					t.Errorf("a call set-up took %v during %s: it waited on Redis beyond redis_timeout", d, stall.name)
				}
			}
			a.waitReadyz(t, 5*time.Second, http.StatusOK)
		})
	}
}

// TestRedisFault_ConfnodeRegistersAgain: a confnode whose node hash or
// whole registration disappears (Redis restarted empty) writes it again at
// its next heartbeat.
func TestRedisFault_ConfnodeRegistersAgain(t *testing.T) {
	e := newEnv(t)
	e.startConfnode("cn1")
	ctx := context.Background()
	registered := func() string {
		if ok, err := e.rdb.SIsMember(ctx, "sipedge:nodes", "cn1").Result(); err != nil || !ok {
			return fmt.Sprintf("not in sipedge:nodes (%v)", err)
		}
		if addr, err := e.rdb.HGet(ctx, "sipedge:node:cn1", "addr").Result(); err != nil || addr == "" {
			return fmt.Sprintf("no addr in its hash (%v)", err)
		}
		return ""
	}
	eventually(t, 5*time.Second, "confnode registered", registered)
	e.rdb.Del(ctx, "sipedge:node:cn1")
	eventually(t, 3*time.Second, "node hash written again", registered)
	e.rdb.FlushAll(ctx)
	eventually(t, 3*time.Second, "registration written again after FLUSHALL", registered)
}

// TestRedisFault_FlushedCountsBackWithinABeat: Redis loses its data with
// no outage (FLUSHALL: an operator's slip, or a failover to an empty
// replica). No write fails, so only the generation each write stamps on
// the instance's share tells the instances. Every count is exact again
// within a beat or two, not at the next periodic full beat (10 s). Each
// instance counts its full write in
// sipedge_admission_count_full_writes_total{reason="share_lost"}.
func TestRedisFault_FlushedCountsBackWithinABeat(t *testing.T) {
	c, _ := newFaultCluster(t, false, twoInstances, threeNodes)
	a := c.inst[0]
	held := startHeld(t, a, "fl-held", 4, 2, 25*time.Second)
	eventually(t, 10*time.Second, "held calls counted", func() string { return c.countsExact(held, "A") })
	lost := map[string]string{"reason": "share_lost"}
	before := map[string]float64{}
	for _, s := range c.inst {
		before[s.name] = s.metricOr0(t, "sipedge_admission_count_full_writes_total", lost)
	}

	if err := c.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	flushed := time.Now()
	c.reregister()
	eventually(t, 3*time.Second, "counts exact after FLUSHALL", func() string { return c.countsExact(held, "A") })
	t.Logf("counts exact %v after FLUSHALL", time.Since(flushed).Round(time.Millisecond))
	for _, s := range c.inst {
		if got := s.metricOr0(t, "sipedge_admission_count_full_writes_total", lost); got < before[s.name]+1 {
			t.Errorf("sipedge %s: %v full writes for a lost share, want at least %v", s.name, got, before[s.name]+1)
		}
	}

	held.run.wait().requireAllSucceeded(t, len(held.confs)*held.per)
	eventually(t, 10*time.Second, "no count left", c.countsEmpty)
}
