package admission

import (
	"context"
	"slices"
	"sync"
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

func threeNodes() []ring.Node {
	return []ring.Node{
		{Name: "a", Addr: "127.0.0.1:5071", Weight: 100, Capable: true, Site: "s"},
		{Name: "b", Addr: "127.0.0.1:5072", Weight: 100, Capable: true, Site: "s"},
		{Name: "c", Addr: "127.0.0.1:5073", Weight: 100, Capable: true, Site: "s"},
	}
}

func TestDecideNext(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	snap := ring.BuildSnapshot(threeNodes(), nil, now, ring.HealthOptions{})
	req := Request{Method: "INVITE", ConfID: "conf-7"}
	order := []string{}
	for _, s := range snap.Ring().Scores(req.Key()) {
		order = append(order, s.Name)
	}
	for _, tc := range []struct {
		name  string
		req   Request
		tried []string
		admit bool
		node  string
	}{
		{"first failure goes to the runner-up", req, order[:1], true, order[1]},
		{"second failure to the third", req, order[:2], true, order[2]},
		{"order of tried does not matter", req, []string{order[1], order[0]}, true, order[2]},
		{"every node tried: 503 no node", req, order, false, ""},
		{"nothing tried is plain placement", req, nil, true, order[0]},
		{"REGISTER hashes its AOR", Request{Method: "REGISTER", AOR: "a@b", ConfID: "conf-7"}, nil, true, mustLookup(t, snap, "a@b")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := DecideNext(tc.req, snap, tc.tried, 30)
			if v.Admit != tc.admit {
				t.Fatalf("admit %v, want %v (%+v)", v.Admit, tc.admit, v)
			}
			if !v.Admit {
				if v.Code != 503 || v.Reason != ReasonNoNode || v.RetryAfter != 30 {
					t.Fatalf("rejection %+v", v)
				}
				return
			}
			if v.Node.Name != tc.node || v.Placement != PlacementFailover || slices.Contains(tc.tried, v.Node.Name) {
				t.Fatalf("node %s via %s, want %s via failover", v.Node.Name, v.Placement, tc.node)
			}
		})
	}
}

func mustLookup(t *testing.T, s *ring.Snapshot, key string) string {
	t.Helper()
	n, ok := s.Lookup(key)
	if !ok {
		t.Fatal("empty ring")
	}
	return n.Name
}

// suspectNodes is a SnapshotSource that also takes suspect marks the way
// ring.Watcher does: a marked node leaves the ring.
type suspectNodes struct {
	mu      sync.Mutex
	nodes   []ring.Node
	now     time.Time
	suspect []string
}

func (s *suspectNodes) Snapshot() *ring.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	sus := slices.Clone(s.suspect)
	return ring.BuildSnapshotFrom(ring.Inputs{Nodes: s.nodes, Now: s.now,
		Suspect: func(n string) bool { return slices.Contains(sus, n) }})
}

func (s *suspectNodes) MarkSuspect(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Contains(s.suspect, name) {
		return false
	}
	s.suspect = append(s.suspect, name)
	return true
}

func TestAdmitter_Failover_MarksSuspectPicksNextMovesPlacement(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	k := keys.New("")
	confs := NewConfStore(rdb, k, time.Hour)
	nodes := &suspectNodes{nodes: threeNodes(), now: now}
	reg := prometheus.NewRegistry()
	a, err := NewAdmitter(nodes, &fixedCluster{&Cluster{Settings: Settings{RetryAfter: 9}}}, confs,
		Options{Self: Self{Name: "i1", Site: "s", Server: "srv"}, RedisTimeout: time.Second, Now: func() time.Time { return now }},
		zerolog.Nop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := Request{Method: "INVITE", CallID: "call-1", ConfID: "conf-7"}
	first := a.Admit(ctx, req)
	if !first.Admit {
		t.Fatalf("admit %+v", first)
	}
	// The conference is active on the node that is about to fail.
	mr.HSet(k.Conf("conf-7"), "node", first.Node.Name, "dialogs", "1")

	v := a.Failover(ctx, req, first.Node.Name, []string{first.Node.Name})
	if !v.Admit || v.Node.Name == first.Node.Name || v.Placement != PlacementFailover {
		t.Fatalf("failover verdict %+v", v)
	}
	if !slices.Equal(nodes.suspect, []string{first.Node.Name}) {
		t.Fatalf("suspect %v, want %s", nodes.suspect, first.Node.Name)
	}
	if got, _ := confs.Node(ctx, "conf-7"); got != v.Node.Name {
		t.Fatalf("placement on %q, want it moved to %q", got, v.Node.Name)
	}
	// The next caller of the conference follows it, by sticky placement.
	if next := a.Admit(ctx, Request{Method: "INVITE", CallID: "call-2", ConfID: "conf-7"}); next.Node.Name != v.Node.Name || next.Placement != PlacementSticky {
		t.Fatalf("next caller %+v, want sticky on %s", next, v.Node.Name)
	}
	// A new conference avoids the suspect node too.
	for _, conf := range []string{"x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8"} {
		if n := a.Admit(ctx, Request{Method: "INVITE", ConfID: conf}); n.Node.Name == first.Node.Name {
			t.Fatalf("new conference %s placed on the suspect node", conf)
		}
	}
	// A placement on a node not tried is left alone.
	mr.HSet(k.Conf("conf-8"), "node", v.Node.Name, "dialogs", "1")
	if moved, err := confs.Move(ctx, "conf-8", "zzz", []string{first.Node.Name}); err != nil || moved {
		t.Fatalf("moved %v err %v", moved, err)
	}
	if moved, err := confs.Move(ctx, "no-such-conf", "zzz", []string{first.Node.Name}); err != nil || moved {
		t.Fatalf("unknown conference: moved %v err %v", moved, err)
	}

	// Every node tried: 503 with the settings' Retry-After.
	all := []string{"a", "b", "c"}
	if v := a.Failover(ctx, req, v.Node.Name, all); v.Admit || v.Code != 503 || v.RetryAfter != 9 {
		t.Fatalf("all tried: %+v", v)
	}
	if got := testutil.ToFloat64(a.metrics.placements.WithLabelValues(PlacementFailover)); got != 1 {
		t.Errorf("failover placements %v, want 1", got)
	}

	// Redis down: still a verdict, counted.
	mr.Close()
	if v := a.Failover(ctx, Request{Method: "INVITE", CallID: "call-3", ConfID: "conf-9"}, "a", []string{"a"}); !v.Admit {
		t.Fatalf("Redis down: %+v", v)
	}
	if got := testutil.ToFloat64(a.metrics.redisErrors.WithLabelValues("conf_move")); got != 1 {
		t.Errorf("conf_move errors %v, want 1", got)
	}
}
