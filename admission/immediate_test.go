package admission

import (
	"bytes"
	"context"
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

// Immediate answers exactly the rejections Decide reaches whatever the
// sticky placement, and leaves everything else to Admit.
func TestImmediate(t *testing.T) {
	n1 := ring.Node{Name: "n1", Addr: "127.0.0.1:5071"}
	inRing := fakeNodes{map[string]ring.Node{"n1": n1}, map[string]bool{"n1": true}, "n1"}
	healthyOutOfRing := fakeNodes{map[string]ring.Node{"n1": n1}, map[string]bool{"n1": true}, ""}
	none := fakeNodes{map[string]ring.Node{"n1": n1}, map[string]bool{}, ""}
	deserviced := InstanceVerdict{Deserviced: true, Reject: true, RedirectTo: "127.0.0.2:5060"}
	shutdown := InstanceVerdict{Reject: true, ShuttingDown: true}
	invite := Request{Method: "INVITE", CallID: "c", ConfID: "conf1"}
	register := Request{Method: "REGISTER", CallID: "c", ConfID: "u", AOR: "u@example.com"}
	subscribe := Request{Method: "SUBSCRIBE", CallID: "c", ConfID: "u", AOR: "u@example.com"}
	for _, tc := range []struct {
		name       string
		req        Request
		inst       InstanceVerdict
		nodes      fakeNodes
		redirect   bool
		anyHealthy bool
		ok         bool
		code       int
		cause      string
	}{
		{"deserviced INVITE", invite, deserviced, inRing, false, true, true, 503, CauseDeserviced},
		{"deserviced REGISTER", register, deserviced, inRing, false, true, true, 503, CauseDeserviced},
		{"deserviced SUBSCRIBE", subscribe, deserviced, inRing, false, true, true, 503, CauseDeserviced},
		{"deserviced, answer 302", invite, deserviced, inRing, true, true, true, 302, CauseRedirected},
		{"deserviced, 302 without standby", invite, InstanceVerdict{Deserviced: true, Reject: true}, inRing, true, true, true, 503, CauseDeserviced},
		{"shutting down", register, shutdown, inRing, true, true, true, 503, CauseShutdown},
		{"no node healthy: INVITE", invite, InstanceVerdict{}, none, false, false, true, 503, CauseNoNode},
		{"empty ring: REGISTER", register, InstanceVerdict{}, healthyOutOfRing, false, true, true, 503, CauseNoNode},
		{"empty ring, healthy node: INVITE may be sticky", invite, InstanceVerdict{}, healthyOutOfRing, false, true, false, 0, ""},
		{"normal INVITE needs the sticky lookup", invite, InstanceVerdict{}, inRing, false, true, false, 0, ""},
		{"normal REGISTER is admitted", register, InstanceVerdict{}, inRing, false, true, false, 0, ""},
		{"held back", invite, InstanceVerdict{Deserviced: true, HeldBack: true}, inRing, false, true, false, 0, ""},
		{"in-dialog methods never", Request{Method: "BYE", ConfID: "conf1"}, deserviced, inRing, false, true, false, 0, ""},
		{"OPTIONS never", Request{Method: "OPTIONS", ConfID: "conf1"}, deserviced, none, false, false, false, 0, ""},
		{"no key (404 first)", Request{Method: "INVITE"}, deserviced, inRing, false, true, false, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := State{Instance: tc.inst, Nodes: tc.nodes, RetryAfter: 11, Redirect: tc.redirect, Sticky: "n1"}
			v, ok := Immediate(tc.req, st, tc.anyHealthy)
			if ok != tc.ok || v.Code != tc.code || v.Cause != tc.cause {
				t.Fatalf("Immediate = %+v, %v; want %d %q, %v", v, ok, tc.code, tc.cause, tc.ok)
			}
			if !ok {
				return
			}
			// Whatever the sticky placement Admit would find, Decide agrees.
			for _, sticky := range []string{"", "n1"} {
				st.Sticky = sticky
				if d := Decide(tc.req, st); d != v {
					t.Errorf("Decide with sticky %q = %+v, Immediate %+v", sticky, d, v)
				}
			}
			if v.Code == 503 && v.RetryAfter != 11 {
				t.Errorf("Retry-After %d, want 11", v.RetryAfter)
			}
		})
	}
}

// The Admitter's immediate verdicts are Admit's, and Rejected counts and
// logs them as Admit does; Rejecting follows the instance and the ring.
func TestAdmitter_ImmediateAgreesWithAdmit(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	n1 := ring.Node{Name: "n1", Addr: "127.0.0.1:5071", Weight: 1, Site: "s1"}
	full := ring.BuildSnapshot([]ring.Node{n1}, nil, t0, ring.HealthOptions{})
	empty := ring.BuildSnapshot(nil, nil, t0, ring.HealthOptions{})
	normal := cluster(nil, nil, map[string]instanceFact{"B": {site: "s1", server: "hostB"}})
	deserviced := cluster([]string{"deservice hostA"}, nil, map[string]instanceFact{"B": {site: "s1", server: "hostB"}})
	for _, tc := range []struct {
		name      string
		snap      *ring.Snapshot
		cl        *Cluster
		rejecting bool
		immediate map[string]string // method -> cause; absent: not immediate
	}{
		{"normal", full, normal, false, map[string]string{}},
		{"deserviced", full, deserviced, true, map[string]string{"INVITE": CauseDeserviced, "REGISTER": CauseDeserviced, "SUBSCRIBE": CauseDeserviced}},
		{"no node", empty, normal, true, map[string]string{"INVITE": CauseNoNode, "REGISTER": CauseNoNode, "SUBSCRIBE": CauseNoNode}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			reg := prometheus.NewRegistry()
			a, err := NewAdmitter(fixedNodes{tc.snap}, &fixedCluster{tc.cl}, NewConfStore(rdb, keys.New(""), time.Hour), Options{
				Self: Self{Name: "A", Site: "s1", Server: "hostA"}, HeartbeatTimeout: 5 * time.Second,
				RedisTimeout: time.Second, Now: func() time.Time { return t0 },
			}, zerolog.New(&buf), reg)
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Rejecting(); got != tc.rejecting {
				t.Errorf("Rejecting = %v, want %v", got, tc.rejecting)
			}
			for _, m := range []string{"INVITE", "REGISTER", "SUBSCRIBE", "BYE"} {
				req := Request{Method: m, CallID: "id-" + m, ConfID: "conf1", AOR: "u@example.com"}
				v, ok := a.Immediate(req)
				cause, want := tc.immediate[m]
				if ok != want || ok && v.Cause != cause {
					t.Errorf("%s: Immediate = %+v, %v; want cause %q, %v", m, v, ok, cause, want)
					continue
				}
				if !ok {
					continue
				}
				if av := a.Admit(context.Background(), req); av != v {
					t.Errorf("%s: Admit %+v, Immediate %+v", m, av, v)
				}
				a.Rejected(req, v)
			}
			for _, cause := range []string{CauseDeserviced, CauseNoNode} {
				n := 0
				for _, c := range tc.immediate {
					if c == cause {
						n += 2 // Admit's and Rejected's
					}
				}
				if got := testutil.ToFloat64(a.metrics.rejects.WithLabelValues(cause)); got != float64(n) {
					t.Errorf("rejects{%s} = %v, want %d", cause, got, n)
				}
			}
			if got, want := len(rejectLines(t, &buf)), 2*len(tc.immediate); got != want {
				t.Errorf("%d rejection lines logged, want %d", got, want)
			}
		})
	}
}
