package admission

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/internal/logging"
	"github.com/sipedge/sipedge/ring"
)

type fixedNodes struct{ s *ring.Snapshot }

func (f fixedNodes) Snapshot() *ring.Snapshot { return f.s }

type fixedCluster struct{ c *Cluster }

func (f *fixedCluster) Cluster() *Cluster { return f.c }

// rejectLines parses the "Participant failed to join conference" lines.
func rejectLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if l == "" || json.Unmarshal([]byte(l), &rec) != nil || rec["message"] != "Participant failed to join conference" {
			continue
		}
		out = append(out, rec)
	}
	return out
}

// Under a flood of rejections (a deserviced instance answering 503 to
// everything) the seed's line is kept, at info, but sampled per reason;
// the counter counts every rejection.
func TestAdmit_RejectionLogSampledPerReasonCountersExact(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	var buf bytes.Buffer
	reg := prometheus.NewRegistry()
	cl := &fixedCluster{c: cluster([]string{"deservice hostA"}, nil,
		map[string]instanceFact{"B": {site: "s1", server: "hostB"}})}
	empty := ring.BuildSnapshot(nil, nil, t0, ring.HealthOptions{})
	a, err := NewAdmitter(fixedNodes{empty}, cl, NewConfStore(rdb, keys.New(""), time.Hour), Options{
		Self: Self{Name: "A", Site: "s1", Server: "hostA"}, HeartbeatTimeout: 5 * time.Second,
		RedisTimeout: time.Second, Now: func() time.Time { return t0 },
	}, zerolog.New(&buf), reg)
	if err != nil {
		t.Fatal(err)
	}
	const flood = 3000
	for range flood {
		if v := a.Admit(context.Background(), Request{Method: "INVITE", CallID: "c", ConfID: "conf"}); v.Reason != ReasonMaintenance {
			t.Fatalf("verdict %+v, want %q", v, ReasonMaintenance)
		}
	}
	lines := rejectLines(t, &buf)
	if len(lines) < logging.SampledBurst || len(lines) > logging.SampledBurst+flood/1000+1 {
		t.Fatalf("%d lines for %d rejections, want %d..%d", len(lines), flood, logging.SampledBurst, logging.SampledBurst+flood/1000+1)
	}
	var suppressed float64
	for _, l := range lines {
		if l["level"] != "info" || l["reason"] != ReasonMaintenance || l["call_id"] != "c" {
			t.Errorf("line %v: want level info, reason %q, call_id", l, ReasonMaintenance)
		}
		n, _ := l["suppressed"].(float64)
		suppressed += n
	}
	if suppressed == 0 {
		t.Errorf("no line says how many were left out")
	}
	if got := testutil.ToFloat64(a.metrics.rejects.WithLabelValues(CauseDeserviced)); got != flood {
		t.Errorf("rejects counted %v, want %d", got, flood)
	}

	// Another reason has its own allowance: back in service with an
	// empty ring, the first "no media node" rejection is written at once.
	cl.c = cluster(nil, nil, map[string]instanceFact{"B": {site: "s1", server: "hostB"}})
	a.verdict.Store(nil)
	buf.Reset()
	if v := a.Admit(context.Background(), Request{Method: "INVITE", CallID: "n", ConfID: "conf"}); v.Reason != ReasonNoNode {
		t.Fatalf("verdict %+v, want %q", v, ReasonNoNode)
	}
	if l := rejectLines(t, &buf); len(l) != 1 || l[0]["reason"] != ReasonNoNode {
		t.Errorf("first rejection of another reason: lines %v", l)
	}
}

// Issue 10 item 3: placements count new dialogs only; an ACK or BYE routed
// by its Request-URI (a caller that ignored Record-Route) is no placement.
func TestAdmit_PlacementsCountNewDialogsOnly(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	t0 := time.Unix(1_700_000_000, 0)
	snap := ring.BuildSnapshot([]ring.Node{{Name: "n1", Addr: "127.0.0.1:5071", Weight: 100, Capable: true}}, nil, t0, ring.HealthOptions{})
	a, err := NewAdmitter(fixedNodes{snap}, &fixedCluster{c: cluster(nil, nil, nil)}, NewConfStore(rdb, keys.New(""), time.Hour),
		Options{Self: Self{Name: "A", Site: "s1", Server: "hostA"}, HeartbeatTimeout: 5 * time.Second, RedisTimeout: time.Second,
			Now: func() time.Time { return t0 }}, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"INVITE", "ACK", "BYE", "SUBSCRIBE", "REGISTER", "INFO"} {
		if v := a.Admit(context.Background(), Request{Method: m, CallID: "c", ConfID: "conf", AOR: "u@h"}); !v.Admit {
			t.Fatalf("%s: %+v", m, v)
		}
	}
	if got := testutil.ToFloat64(a.metrics.placements.WithLabelValues(PlacementRing)); got != 3 {
		t.Errorf("placements = %v, want 3 (INVITE, SUBSCRIBE, REGISTER)", got)
	}
}
