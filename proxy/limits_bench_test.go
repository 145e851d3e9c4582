package proxy

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkLimitCheck is the per-source decision of one new dialog from a
// source within its rate (the common case): global checks, table lookup,
// token bucket, caps.
func BenchmarkLimitCheck(b *testing.B) {
	l := newLimiter(LimitOptions{SourceRate: 1e9, SourceBurst: 1e9, SourceHalfOpen: 100, SourcePorts: 100,
		MaxDialogs: 1e6, MaxHalfOpen: 1e6, MaxPortsPercent: 95, MaxMemoryBytes: 1 << 40})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, why := l.check(srcA, false, true, false, now, globalUse{portsInUse: 10, portsCap: 1000}); why != limitNone {
			b.Fatal(why)
		}
	}
}

// BenchmarkLimitCheckParallel is the same from many goroutines and 1000
// sources: shards keep them off one lock.
func BenchmarkLimitCheckParallel(b *testing.B) {
	l := newLimiter(LimitOptions{SourceRate: 1e9, SourceBurst: 1e9})
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
			l.check(a, false, true, false, now, globalUse{})
			i = (i + 1) % 1000
		}
	})
}

// BenchmarkLimitFloodFilter is the read filter on a flooding source's
// INVITE datagram, the path 20 000 INVITE/s take: dropped before parsing.
func BenchmarkLimitFloodFilter(b *testing.B) {
	p := &Proxy{opts: Options{Limits: LimitOptions{SourceRate: 20, SourceBurst: 40},
		Trust: func(netip.AddrPort) (string, bool) { return "", false }}}
	if err := p.initLimits(prometheus.NewRegistry()); err != nil {
		b.Fatal(err)
	}
	props := sip.TransportReadProps{Transport: "UDP", RemoteAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 5060}}
	data := []byte("INVITE sip:flood@127.0.0.1 SIP/2.0\r\n")
	b.ReportAllocs()
	for b.Loop() {
		_, _ = p.floodFilter(props, data)
	}
}

// BenchmarkLimitHalfOpenLifecycle is what one admitted call adds: begin,
// ports charged, settle after a 2xx, ACK, ports freed.
func BenchmarkLimitHalfOpenLifecycle(b *testing.B) {
	l := newLimiter(LimitOptions{SourceRate: 1e9, SourceBurst: 1e9})
	src, _ := l.check(srcA, false, true, false, time.Now(), globalUse{})
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = "bench-call-" + strconv.Itoa(i)
	}
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := ids[i%len(ids)]
		l.begin(id, src)
		l.chargePorts(id, 4)
		l.settle(id, true, now)
		l.acked(id)
		l.freePorts(id)
		i++
	}
}
