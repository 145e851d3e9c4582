package app

import (
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func failureRegistry(t testing.TB) (*prometheus.Registry, *prometheus.CounterVec, prometheus.Counter) {
	reg := prometheus.NewRegistry()
	rejects := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sipedge_admission_rejects_total", Help: "h"}, []string{"cause"})
	redisErrs := prometheus.NewCounter(prometheus.CounterOpts{Name: "sipedge_media_redis_errors_total", Help: "h"})
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "sipedge_sip_requests_total", Help: "h"})
	reg.MustRegister(rejects, redisErrs, other)
	rejects.WithLabelValues("deserviced").Add(3)
	rejects.WithLabelValues("no_nodes").Add(2)
	redisErrs.Add(4)
	other.Add(100)
	return reg, rejects, redisErrs
}

func TestFailureTotals_SumsRejectAndErrorCounters(t *testing.T) {
	reg, rejects, redisErrs := failureRegistry(t)
	if r, e := failureTotals(reg); r != 5 || e != 4 {
		t.Fatalf("failureTotals = %v rejects, %v errors; want 5, 4", r, e)
	}
	rejects.WithLabelValues("deserviced").Inc()
	redisErrs.Inc()
	if r, e := failureTotals(reg); r != 6 || e != 5 {
		t.Errorf("after one more of each = %v, %v; want 6, 5", r, e)
	}
}

// BenchmarkFailureTotals: the live view's per-second sum over sipedge's
// own registry, and over one that also holds the Go and process
// collectors (as before they were moved to a registry of their own), with
// 4000 sockets open as a relay holding 1000 anchored calls has.
func BenchmarkFailureTotals(b *testing.B) {
	var socks []net.PacketConn
	for range 4000 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Skipf("open sockets: %v", err)
		}
		socks = append(socks, pc)
	}
	defer func() {
		for _, pc := range socks {
			pc.Close()
		}
	}()
	own, _, _ := failureRegistry(b)
	withRuntime, _, _ := failureRegistry(b)
	withRuntime.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, bc := range []struct {
		name string
		g    prometheus.Gatherer
	}{{"own", own}, {"with-runtime-and-process", withRuntime}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				failureTotals(bc.g)
			}
		})
	}
}

// Every collector lands in the daemon's registry; the live view's
// registry holds only the counters it sums, and sums to the same.
func TestFailureRegisterer_ViewGathersOnlyItsCounters(t *testing.T) {
	main := prometheus.NewRegistry()
	reg := newFailureRegisterer(main)
	rejects := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sipedge_admission_rejects_total", Help: "h"}, []string{"cause"})
	limited := prometheus.NewCounter(prometheus.CounterOpts{Name: "sipedge_proxy_limited_total", Help: "h"})
	redisErrs := prometheus.NewCounter(prometheus.CounterOpts{Name: "sipedge_ring_redis_errors_total", Help: "h"})
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "sipedge_sip_requests_total", Help: "h"})
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sipedge_sip_setup_seconds", Help: "h"})
	reg.MustRegister(rejects, limited, redisErrs, other, hist)
	rejects.WithLabelValues("deserviced").Add(2)
	limited.Add(3)
	redisErrs.Add(4)
	other.Add(100)
	hist.Observe(1)

	names := func(g prometheus.Gatherer) []string {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, mf := range mfs {
			out = append(out, mf.GetName())
		}
		return out
	}
	if got := names(main); len(got) != 5 {
		t.Errorf("daemon registry holds %v, want all 5", got)
	}
	if got := names(reg.failures); len(got) != 3 {
		t.Errorf("view registry holds %v, want the 3 failure counters", got)
	}
	r1, e1 := failureTotals(main)
	r2, e2 := failureTotals(reg.failures)
	if r1 != 5 || e1 != 4 || r2 != r1 || e2 != e1 {
		t.Errorf("totals: daemon %v/%v, view %v/%v; want 5/4 both", r1, e1, r2, e2)
	}
	if err := reg.Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "sipedge_proxy_limited_total", Help: "h"})); err == nil {
		t.Error("a duplicate registration was accepted")
	}
	if !reg.Unregister(limited) {
		t.Error("unregister failed")
	}
	if got := names(reg.failures); len(got) != 2 {
		t.Errorf("after unregister the view registry holds %v", got)
	}
}
