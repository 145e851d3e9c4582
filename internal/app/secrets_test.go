package app

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/internal/keys"
)

// Issue 8 item 8: an instance follows a rotation of the route secret in
// Redis and never drops a secret it encoded with before the next change.
func TestSecretWatch_NextRoute(t *testing.T) {
	type step struct {
		cur, next, prev string // what Redis holds
		wantCur         string
		wantOld         []string
		wantChanged     bool
	}
	cases := []struct {
		name  string
		start secretWatch
		steps []step
	}{
		{"nothing changes", secretWatch{route: "A"}, []step{
			{"A", "", "", "A", nil, false},
		}},
		{"rotation: next staged, then promoted, then prev dropped", secretWatch{route: "A"}, []step{
			{"A", "B", "", "A", []string{"B"}, true},
			{"B", "", "A", "B", []string{"A"}, true},
			{"B", "", "A", "B", []string{"A"}, false},
			{"B", "", "", "B", []string{"A"}, false}, // the replaced one stays until the next change
			{"C", "", "", "C", []string{"B"}, true},
		}},
		{"redis emptied: keep what is held", secretWatch{route: "A", routeOld: []string{"Z"}}, []step{
			{"", "", "", "A", []string{"Z"}, false},
			{"A", "", "Z", "A", []string{"Z"}, false}, // written back
		}},
		{"redis emptied, another instance made a new secret", secretWatch{route: "A"}, []step{
			{"N", "", "", "N", []string{"A"}, true},
		}},
		{"prev equal to current is not listed", secretWatch{route: "A"}, []step{
			{"A", "A", "A", "A", nil, false},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.start
			for i, s := range tc.steps {
				cur, old, changed := w.nextRoute(s.cur, s.next, s.prev)
				if cur != s.wantCur || !slices.Equal(old, s.wantOld) || changed != s.wantChanged {
					t.Fatalf("step %d (%+v): got %q %q changed=%v, want %q %q changed=%v",
						i, s, cur, old, changed, s.wantCur, s.wantOld, s.wantChanged)
				}
			}
		})
	}
}

func TestSecretWatch_NextNode(t *testing.T) {
	w := secretWatch{nodes: []string{"A"}}
	if _, changed := w.nextNode("A"); changed {
		t.Fatal("same secret reported as a change")
	}
	if _, changed := w.nextNode(""); changed {
		t.Fatal("a missing secret replaced the held one")
	}
	if got, changed := w.nextNode("B"); !changed || !slices.Equal(got, []string{"B", "A"}) {
		t.Fatalf("rotation to B: %q changed=%v, want [B A]", got, changed)
	}
	if got, _ := w.nextNode("C"); !slices.Equal(got, []string{"C", "B"}) {
		t.Fatalf("rotation to C: %q, want [C B]", got)
	}
}

func TestFingerprint_HidesSecret(t *testing.T) {
	if f := fingerprint("s3cr3t"); len(f) != 8 || f == fingerprint("other") {
		t.Fatalf("fingerprint %q", f)
	}
}

func TestSecretWatch_WriteBack(t *testing.T) {
	w := secretWatch{route: "A", routeOld: []string{"N", "P"}}
	if cur, prev := w.writeBack(); cur != "A" || prev != "P" {
		t.Fatalf("writeBack = %q %q, want A P", cur, prev)
	}
	w.nextRoute("B", "", "")
	if cur, prev := w.writeBack(); cur != "B" || prev != "A" {
		t.Fatalf("after rotation writeBack = %q %q, want B A (the replaced one)", cur, prev)
	}
}

func TestLoadTrustSecrets(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	k := keys.New("")
	ctx := context.Background()
	cfg := config.Default()

	_ = mr.Set(k.RouteSecretPrev(), "P")
	ts, err := loadTrustSecrets(ctx, rdb, k, cfg)
	if err != nil {
		t.Fatal(err)
	}
	created, _ := mr.Get(k.NodeSecret())
	if len(created) != 64 || !slices.Equal(ts.nodes, []string{created}) || !slices.Equal(ts.oldRoutes, []string{"P"}) {
		t.Fatalf("redis mode: %+v, node secret in redis %q", ts, created)
	}
	if ts2, _ := loadTrustSecrets(ctx, rdb, k, cfg); !slices.Equal(ts2.nodes, ts.nodes) {
		t.Fatalf("second start got node secrets %q, want the shared %q", ts2.nodes, ts.nodes)
	}

	cfg.RouteKey, cfg.RouteKeyPrev, cfg.NodeSecret, cfg.NodeSecretPrev = "R", "R0", "N", "N0"
	ts, err = loadTrustSecrets(ctx, rdb, k, cfg)
	if err != nil || !slices.Equal(ts.oldRoutes, []string{"R0"}) || !slices.Equal(ts.nodes, []string{"N", "N0"}) {
		t.Fatalf("configured: %+v, %v", ts, err)
	}
}

type sinkRec struct {
	mu     sync.Mutex
	routes [][]string
	nodes  [][]string
}

func (s *sinkRec) SetRouteSecrets(cur string, old ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes = append(s.routes, append([]string{cur}, old...))
	return nil
}

func (s *sinkRec) SetNodeSecrets(secrets ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes = append(s.nodes, secrets)
}

func (s *sinkRec) last() ([]string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r, n []string
	if len(s.routes) > 0 {
		r = s.routes[len(s.routes)-1]
	}
	if len(s.nodes) > 0 {
		n = s.nodes[len(s.nodes)-1]
	}
	return r, n
}

// The watcher applies a rotation found in Redis and writes lost secrets back.
func TestWatchSecrets_RotationAndWriteBack(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	k := keys.New("")
	cfg := config.Default()
	_ = mr.Set(k.RouteSecret(), "A")
	_ = mr.Set(k.NodeSecret(), "N1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink := &sinkRec{}
	done := make(chan struct{})
	go func() {
		watchSecrets(ctx, rdb, k, cfg, "A", trustSecrets{nodes: []string{"N1"}}, sink, zerolog.Nop())
		close(done)
	}()

	_ = mr.Set(k.RouteSecret(), "B")
	_ = mr.Set(k.RouteSecretPrev(), "A")
	_ = mr.Set(k.NodeSecret(), "N2")
	waitUntil(t, func() bool {
		r, n := sink.last()
		return slices.Equal(r, []string{"B", "A"}) && slices.Equal(n, []string{"N2", "N1"})
	}, "rotation applied")

	mr.FlushAll() // Redis restarted empty
	waitUntil(t, func() bool {
		cur, _ := mr.Get(k.RouteSecret())
		prev, _ := mr.Get(k.RouteSecretPrev())
		node, _ := mr.Get(k.NodeSecret())
		return cur == "B" && prev == "A" && node == "N2"
	}, "secrets written back")
	if r, _ := sink.last(); !slices.Equal(r, []string{"B", "A"}) {
		t.Errorf("after the flush the proxy holds %q, want [B A] kept", r)
	}
	cancel()
	<-done
}

func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
