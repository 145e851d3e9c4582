package admission

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/ring"
)

// stickyEnv is one instance (A) with a dialog set, its Ledger writing to
// a miniredis, and an Admitter reading the Ledger; the clock is injected.
type stickyEnv struct {
	t      testing.TB
	mr     *miniredis.Miniredis
	k      keys.Keys
	h      *fakeHolder
	l      *Ledger
	a      *Admitter
	nodes  *fixedNodes
	now    time.Time
	ringN  string // the node the ring picks for the conference
	sticky string // another node: where the conference is placed
}

const stickyConf = "bench7"

func newStickyEnv(t testing.TB) *stickyEnv {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	e := &stickyEnv{t: t, mr: mr, k: keys.New(""), h: newHolder(), now: t0}
	clock := func() time.Time { return e.now }
	e.nodes = &fixedNodes{ring.BuildSnapshot(threeNodes(), nil, t0, ring.HealthOptions{})}
	var err error
	e.l, err = NewLedger(rdb, e.k, LedgerOptions{Self: "A", Interval: time.Second, LiveFor: 5 * time.Second,
		HeartbeatTimeout: 5 * time.Second, ConfTTL: time.Hour, RedisTimeout: time.Second, Now: clock}, e.h, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.a, err = NewAdmitter(e.nodes, &fixedCluster{c: cluster(nil, nil, nil)}, NewConfStore(rdb, e.k, time.Hour),
		Options{Self: Self{Name: "A", Site: "s", Server: "hostA"}, HeartbeatTimeout: 5 * time.Second,
			RedisTimeout: time.Second, Ledger: e.l, Now: clock}, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	n, ok := e.nodes.s.Lookup(stickyConf)
	if !ok {
		t.Fatal("empty ring")
	}
	e.ringN = n.Name
	for _, n := range threeNodes() {
		if n.Name != e.ringN {
			e.sticky = n.Name
			break
		}
	}
	return e
}

// leg adds a dialog of the conference on node and writes it, as the
// proxy's DialogStarted does.
func (e *stickyEnv) leg(key, node string) {
	e.h.add(key, stickyConf, node)
	e.l.Touch(stickyConf, node)
	e.l.flush(context.Background())
}

// end removes a dialog and writes it, as DialogEnded does.
func (e *stickyEnv) end(key string) {
	e.h.remove(key)
	e.l.Touch(stickyConf, "")
	e.l.flush(context.Background())
}

// unhealthy rebuilds the snapshot with node failing its probes.
func (e *stickyEnv) unhealthy(node string) {
	e.nodes.s = ring.BuildSnapshot(threeNodes(), func(n string) bool { return n != node }, e.now,
		ring.HealthOptions{ProbeInterval: time.Second})
}

// indexReady makes the placement index complete: subscribed, then a scan.
func (e *stickyEnv) indexReady() {
	e.l.PlacementsSubscribed()
	if err := e.l.reconcile(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	if !e.l.index.ready() {
		e.t.Fatal("placement index not ready after a subscription and a scan")
	}
}

// oracle is today's verdict: Decide with the node Redis holds now.
func (e *stickyEnv) oracle(req Request) Verdict {
	st := State{Instance: e.a.Instance(), Nodes: e.nodes.s, Sticky: e.mr.HGet(e.k.Conf(req.ConfID), "node")}
	return Decide(req, st)
}

func TestAdmit_StickyPlacementAnsweredLocallyWhenHeld(t *testing.T) {
	req := Request{Method: "INVITE", CallID: "new", ConfID: stickyConf}
	for _, tc := range []struct {
		name   string
		setup  func(e *stickyEnv)
		source string // where the sticky node came from
		node   func(e *stickyEnv) string
		today  bool // the verdict is the one Decide gives with Redis's node
	}{
		{
			name:   "a live leg here: answered locally, the node Redis holds",
			setup:  func(e *stickyEnv) { e.leg("d1", e.sticky) },
			source: StickyLocal, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name: "no leg here: Redis asked",
			setup: func(e *stickyEnv) {
				e.mr.HSet(e.k.Conf(stickyConf), "node", e.sticky) // placed by another instance
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name:   "nothing anywhere: Redis asked, placed by ring",
			setup:  func(e *stickyEnv) {},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.ringN }, today: true,
		},
		{
			name: "the last leg here ended: Redis asked (another instance holds the conference)",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				e.h.remove("d1") // ended, not yet written
				e.mr.HSet(e.k.Conf(stickyConf), "node", e.sticky)
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name: "the held node is unhealthy: Redis asked, same verdict as today (ring)",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				e.unhealthy(e.sticky)
			},
			source: StickyRedis, node: func(e *stickyEnv) string { n, _ := e.nodes.s.Lookup(stickyConf); return n.Name }, today: true,
		},
		{
			name: "conference ended (conf-end): legs being torn down do not answer",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				e.l.ConfEnded(stickyConf)
				e.leg("d2", e.sticky) // a write after the end, legs still held
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name: "conference ended and its legs gone: a new conference is placed by the ring",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				e.l.ConfEnded(stickyConf)
				e.now = e.now.Add(time.Millisecond)
				e.end("d1") // the key is deleted: nobody holds it
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.ringN }, today: true,
		},
		{
			name: "legs on two nodes: the node Redis holds, not the latest leg's",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				e.leg("d2", e.ringN) // a failover elsewhere put a leg on another node
			},
			source: StickyLocal, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name: "Redis moved the placement (failover through another instance) and the old node is down",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				e.mr.HSet(e.k.Conf(stickyConf), "node", e.ringN)
				e.unhealthy(e.sticky)
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.ringN }, today: true,
		},
		{
			name: "writes failing for two beats: the answer is stale, Redis asked",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				e.now = e.now.Add(2*time.Second + time.Millisecond)
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name: "beats that write nothing of it (light) keep the answer local",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				for range 5 {
					e.now = e.now.Add(time.Second)
					e.mr.FastForward(time.Second)
					e.l.Beat(context.Background())
				}
			},
			source: StickyLocal, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name: "another instance moved it (announced): Redis asked",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				e.mr.HSet(e.k.Conf(stickyConf), "node", e.ringN)
				e.l.ConfMoved(stickyConf)
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.ringN }, today: true,
		},
		{
			name: "a later write found the share lost (Redis emptied): the answer before it is set aside",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				e.mr.FlushAll()
				e.now = e.now.Add(time.Millisecond)
				e.h.add("o1", "other", e.sticky)
				e.l.Touch("other", e.sticky)
				e.l.flush(context.Background())
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.ringN }, today: true,
		},
		{
			name: "resubscribed to the placements channel (a move may be unheard): Redis asked",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				e.now = e.now.Add(time.Millisecond)
				e.l.PlacementsSubscribed()
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name: "Redis error with a leg held: answered locally",
			setup: func(e *stickyEnv) {
				e.leg("d1", e.sticky)
				e.mr.SetError("LOADING Redis is loading the dataset in memory")
			},
			source: StickyLocal, node: func(e *stickyEnv) string { return e.sticky },
		},
		{
			name:   "index ready, nothing anywhere: placed by ring without asking Redis",
			setup:  func(e *stickyEnv) { e.indexReady() },
			source: StickyUnplaced, node: func(e *stickyEnv) string { return e.ringN }, today: true,
		},
		{
			name: "index ready, placed by another instance since (announced): Redis asked",
			setup: func(e *stickyEnv) {
				e.indexReady()
				e.mr.HSet(e.k.Conf(stickyConf), "node", e.sticky)
				e.l.ConfPlaced(stickyConf, true)
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name: "index ready, the key was there at the scan: Redis asked",
			setup: func(e *stickyEnv) {
				e.mr.SAdd(e.k.Instances(), "B") // B holds a dialog of it: the reconcile keeps the key
				e.mr.HSet(e.k.Calls("B"), "t", "1", "c:"+stickyConf, "1")
				e.mr.HSet(e.k.Conf(stickyConf), "node", e.sticky, "dialogs", "1")
				e.indexReady()
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name: "a Redis failure since the scan (announcements may be lost): Redis asked",
			setup: func(e *stickyEnv) {
				e.indexReady()
				e.l.fail(context.Background(), "beat", errors.New("i/o timeout"))
				e.mr.HSet(e.k.Conf(stickyConf), "node", e.sticky) // placed meanwhile, not announced
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name: "resubscribed since the scan: Redis asked until the next scan",
			setup: func(e *stickyEnv) {
				e.indexReady()
				e.l.PlacementsSubscribed()
				e.mr.HSet(e.k.Conf(stickyConf), "node", e.sticky)
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.sticky }, today: true,
		},
		{
			name: "scanned before the first subscription: Redis asked",
			setup: func(e *stickyEnv) {
				if err := e.l.reconcile(context.Background()); err != nil {
					e.t.Fatal(err)
				}
				e.l.PlacementsSubscribed()
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.ringN }, today: true,
		},
		{
			name: "Redis error with no leg held: placed by ring (fail-static)",
			setup: func(e *stickyEnv) {
				e.mr.HSet(e.k.Conf(stickyConf), "node", e.sticky)
				e.mr.SetError("LOADING Redis is loading the dataset in memory")
			},
			source: StickyRedis, node: func(e *stickyEnv) string { return e.ringN },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newStickyEnv(t)
			tc.setup(e)
			var want Verdict
			if tc.today {
				want = e.oracle(req)
			}
			before := e.mr.CommandCount()
			v := e.a.Admit(context.Background(), req)
			cmds := e.mr.CommandCount() - before
			if !v.Admit || v.Node.Name != tc.node(e) {
				t.Fatalf("verdict %+v, want node %s", v, tc.node(e))
			}
			if tc.today && (v.Node.Name != want.Node.Name || v.Placement != want.Placement) {
				t.Errorf("verdict %s/%s, Redis would give %s/%s", v.Node.Name, v.Placement, want.Node.Name, want.Placement)
			}
			local := testutil.ToFloat64(e.a.metrics.stickyLocal)
			redisN := testutil.ToFloat64(e.a.metrics.stickyRedis)
			unplaced := testutil.ToFloat64(e.a.metrics.stickyUnplaced)
			if tc.source != StickyUnplaced && unplaced != 0 {
				t.Errorf("%v lookups answered unplaced; want %s", unplaced, tc.source)
			}
			switch tc.source {
			case StickyUnplaced:
				if unplaced != 1 || local != 0 || redisN != 0 || cmds != 0 {
					t.Errorf("unplaced %v local %v redis %v lookups, %d Redis commands; want answered by the index", unplaced, local, redisN, cmds)
				}
			case StickyLocal:
				if local != 1 || redisN != 0 || cmds != 0 {
					t.Errorf("local %v redis %v lookups, %d Redis commands; want answered locally", local, redisN, cmds)
				}
			case StickyRedis:
				if local != 0 || redisN != 1 {
					t.Errorf("local %v redis %v lookups; want asked Redis", local, redisN)
				}
			}
		})
	}
}

// After a conf-end the local answer comes back only for legs set up after
// the ended ones are gone.
func TestLedger_ConfEndedBlocksLocalAnswerUntilLegsGone(t *testing.T) {
	e := newStickyEnv(t)
	e.leg("d1", e.sticky)
	if n, ok := e.l.Placed(stickyConf); !ok || n != e.sticky {
		t.Fatalf("held: Placed = %q %v, want %s", n, ok, e.sticky)
	}
	e.l.ConfEnded(stickyConf)
	e.l.Beat(context.Background()) // a full write while the ended leg is still held
	if n, ok := e.l.Placed(stickyConf); ok {
		t.Fatalf("ended, leg still held: Placed = %q, want none", n)
	}
	e.now = e.now.Add(time.Millisecond)
	e.end("d1")
	e.leg("d2", e.ringN) // a new conference of the same id, placed by the ring
	if n, ok := e.l.Placed(stickyConf); !ok || n != e.ringN {
		t.Fatalf("new conference: Placed = %q %v, want %s", n, ok, e.ringN)
	}
}

// A failover through this instance may move the placement: the local
// answer is dropped until the next write returns the node.
func TestAdmit_FailoverDropsLocalAnswer(t *testing.T) {
	e := newStickyEnv(t)
	e.leg("d1", e.sticky)
	req := Request{Method: "INVITE", CallID: "f", ConfID: stickyConf}
	v := e.a.Failover(context.Background(), req, e.sticky, []string{e.sticky})
	if !v.Admit || v.Node.Name == e.sticky {
		t.Fatalf("failover verdict %+v", v)
	}
	if _, ok := e.l.Placed(stickyConf); ok {
		t.Fatal("local answer kept after Move")
	}
	if got := e.mr.HGet(e.k.Conf(stickyConf), "node"); got != v.Node.Name {
		t.Fatalf("Redis node %q, want %s", got, v.Node.Name)
	}
	e.leg("d2", v.Node.Name)
	if n, ok := e.l.Placed(stickyConf); !ok || n != v.Node.Name {
		t.Fatalf("after the next write: Placed = %q %v, want %s", n, ok, v.Node.Name)
	}
}

// Answers and conf-end marks nothing refreshes are dropped at a beat.
func TestLedger_PlacedPrunedWhenNotRefreshed(t *testing.T) {
	e := newStickyEnv(t)
	e.leg("d1", e.sticky)
	e.l.ConfEnded("other")
	e.now = e.now.Add(placedKeep + time.Second)
	e.l.placed.prune(e.now, placedKeep)
	if len(e.l.placed.placed) != 0 || len(e.l.placed.ended) != 0 {
		t.Fatalf("kept: placed %v ended %v", e.l.placed.placed, e.l.placed.ended)
	}
}

// A move is announced on the placements channel, for the instances that
// answer the conference's node locally (ConfMoved).
func TestConfStore_MoveAnnouncesTheMove(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	k := keys.New("")
	ctx := context.Background()
	ps := rdb.Subscribe(ctx, k.Placements())
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	mr.HSet(k.Conf("c"), "node", "n1")
	s := NewConfStore(rdb, k, time.Hour)
	if moved, err := s.Move(ctx, "c", "n2", []string{"n3"}); err != nil || moved {
		t.Fatalf("Move off a node it is not on: %v %v", moved, err)
	}
	if moved, err := s.Move(ctx, "c", "n2", []string{"n3", "n1"}); err != nil || !moved {
		t.Fatalf("Move: %v %v", moved, err)
	}
	if got := mr.HGet(k.Conf("c"), "node"); got != "n2" {
		t.Fatalf("node %q after the move, want n2", got)
	}
	select {
	case m := <-ps.Channel():
		if id, ok := keys.ParseMoved(m.Payload); !ok || id != "c" {
			t.Fatalf("announced %q, want the move of c", m.Payload)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the move was not announced")
	}
}
