package relay

import (
	"context"
	"encoding/binary"
	"runtime"
	"testing"
	"time"
)

// BenchmarkStreamMemory reports what one relayed call (one audio stream,
// four sockets) holds in the process once RTP has flowed both ways
// through it: heap and goroutine stacks per stream (none since the epoll
// workers; the kernel's socket buffers are counted by bench-compare's
// relay step, not here).
func BenchmarkStreamMemory(b *testing.B) {
	const streams = 200
	pool := testPool(b, 2*streams)
	m, err := NewMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	ep, node := newParty(b), newParty(b)
	pkt := rtpPkt(b, 0xa, 1, 160)
	buf := make([]byte, 2048)
	var perStream, stacks float64
	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		ss := make([]*Stream, streams)
		for i := range ss {
			s, err := NewStream(context.Background(), pool, Config{Metrics: m}, "call", i)
			if err != nil {
				b.Fatal(err)
			}
			s.SetPeerA(ep.addrRTP(), ep.addrRTCP(), false)
			s.SetPeerB(node.addrRTP(), node.addrRTCP(), false)
			ss[i] = s
		}
		// One packet each way through every stream: the per-packet path
		// has run (what it grows is counted).
		for _, s := range ss {
			binary.BigEndian.PutUint16(pkt[2:], 1)
			a, _ := s.LocalA()
			send(b, ep.rtp, a, pkt)
			_ = node.rtp.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := node.rtp.Read(buf); err != nil {
				b.Fatal(err)
			}
			bb, _ := s.LocalB()
			send(b, node.rtp, bb, pkt)
			_ = ep.rtp.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := ep.rtp.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		perStream = (float64(after.HeapInuse+after.StackInuse) - float64(before.HeapInuse+before.StackInuse)) / streams
		stacks = (float64(after.StackInuse) - float64(before.StackInuse)) / streams
		for _, s := range ss {
			_ = s.Close()
		}
	}
	b.ReportMetric(perStream, "B/stream")
	b.ReportMetric(stacks, "stack-B/stream")
}
