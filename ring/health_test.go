package ring

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func TestProbes_Hysteresis(t *testing.T) {
	// Results in order; want is the state after each one.
	for _, tc := range []struct {
		name    string
		results []bool
		want    []bool
	}{
		{"starts up", nil, nil},
		{"down after 3 failures", []bool{false, false, false}, []bool{true, true, false}},
		{"a success resets the failure count", []bool{false, false, true, false, false}, []bool{true, true, true, true, true}},
		{"up again after 2 successes", []bool{false, false, false, true, true}, []bool{true, true, false, false, true}},
		{"a failure resets the success count", []bool{false, false, false, true, false, true, true}, []bool{true, true, false, false, false, false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newProbes(3, 2)
			if !p.up("n1") {
				t.Fatal("unknown node not up")
			}
			for i, ok := range tc.results {
				was := p.up("n1")
				changed := p.record("n1", ok)
				if got := p.up("n1"); got != tc.want[i] || changed != (got != was) {
					t.Fatalf("after result %d (%v): up=%v changed=%v, want up=%v", i, ok, got, changed, tc.want[i])
				}
			}
		})
	}
	t.Run("forgotten node starts up again", func(t *testing.T) {
		p := newProbes(1, 1)
		p.record("n1", false)
		p.retain(map[string]bool{"n2": true})
		if !p.up("n1") {
			t.Error("n1 still down after it was forgotten")
		}
	})
}

// fakePinger fails or hangs per node on demand and counts results.
type fakePinger struct {
	mode              sync.Map // name -> "ok" | "fail" | "hang"
	fails, oks, calls sync.Map // name -> *atomic.Int64
}

func (f *fakePinger) counter(m *sync.Map, name string) *atomic.Int64 {
	c, _ := m.LoadOrStore(name, new(atomic.Int64))
	return c.(*atomic.Int64)
}

func (f *fakePinger) set(name, mode string) {
	f.mode.Store(name, mode)
	f.counter(&f.fails, name).Store(0)
	f.counter(&f.oks, name).Store(0)
}

func (f *fakePinger) Ping(ctx context.Context, n Node) error {
	mode, _ := f.mode.Load(n.Name)
	switch mode {
	case "fail":
		f.counter(&f.fails, n.Name).Add(1)
		return errors.New("408 timeout")
	case "hang":
		<-ctx.Done() // no answer at all: the probe timeout must end it
		f.counter(&f.fails, n.Name).Add(1)
		return ctx.Err()
	}
	f.counter(&f.oks, n.Name).Add(1)
	return nil
}

func TestWatcher_ProbesTakeNodeOutAndBack(t *testing.T) {
	for _, mode := range []string{"fail", "hang"} {
		t.Run(mode, func(t *testing.T) {
			p := &fakePinger{}
			h := newHarness(t, WatcherOptions{ResyncInterval: 20 * time.Millisecond, Health: HealthOptions{
				ProbeInterval: 10 * time.Millisecond, ProbeTimeout: 10 * time.Millisecond, DownAfter: 3, UpAfter: 2,
			}}, p)
			h.put("n1")
			h.put("n2")
			h.run(t)
			p.set("n2", mode)
			eventually(t, "n2 out of the ring", func() bool { return !h.w.Snapshot().Eligible("n2") })
			if n := p.counter(&p.fails, "n2").Load(); n < 3 {
				t.Errorf("n2 left after %d failed probes, want at least DownAfter=3", n)
			}
			s := h.w.Snapshot()
			if st := s.Statuses()[1]; st.Healthy || st.Reason != ReasonProbeDown || !s.Eligible("n1") {
				t.Errorf("statuses %+v", s.Statuses())
			}
			if n := testutil.ToFloat64(h.w.m.probeFailures); n < 3 {
				t.Errorf("probe failures metric %v", n)
			}
			if n := probeObservations(t, h.w.m, "n2", "failed"); n < 3 {
				t.Errorf("probe round trips of n2 failed: %d observations, want at least 3", n)
			}
			if n := probeObservations(t, h.w.m, "n1", "ok"); n < 3 {
				t.Errorf("probe round trips of n1 ok: %d observations, want at least 3", n)
			}

			p.set("n2", "ok")
			eventually(t, "n2 back in the ring", func() bool { return h.w.Snapshot().Eligible("n2") })
			if n := p.counter(&p.oks, "n2").Load(); n < 2 {
				t.Errorf("n2 returned after %d answered probes, want at least UpAfter=2", n)
			}
		})
	}
}

func probeObservations(t *testing.T, m *metrics, node, result string) uint64 {
	t.Helper()
	var d dto.Metric
	if err := m.probeRTT.WithLabelValues(node, result).(prometheus.Metric).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetHistogram().GetSampleCount()
}

// A node removed from Redis takes its probe round-trip series with it.
func TestWatcher_RemovedNodeLosesItsProbeSeries(t *testing.T) {
	p := &fakePinger{}
	h := newHarness(t, WatcherOptions{ResyncInterval: 20 * time.Millisecond, Health: HealthOptions{
		ProbeInterval: 10 * time.Millisecond, ProbeTimeout: 10 * time.Millisecond, DownAfter: 3, UpAfter: 2,
	}}, p)
	h.put("n1")
	h.put("n2")
	h.run(t)
	eventually(t, "n2 probed", func() bool { return probeObservations(t, h.w.m, "n2", "ok") > 0 })
	h.mr.SRem(tk.Nodes(), "n2")
	h.mr.Del(tk.Node("n2"))
	eventually(t, "n2 series gone", func() bool { return seriesOf(t, h.w.m.probeRTT, "n2") == 0 })
	if seriesOf(t, h.w.m.probeRTT, "n1") == 0 {
		t.Error("n1's series went with n2's")
	}
}

// seriesOf counts c's series labelled node (n1 may also have a "failed"
// series when a slow run times its 10 ms probes out).
func seriesOf(t *testing.T, c prometheus.Collector, node string) int {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		for _, l := range d.GetLabel() {
			if l.GetName() == "node" && l.GetValue() == node {
				n++
			}
		}
	}
	return n
}
