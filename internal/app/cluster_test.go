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
