package relay

import (
	"context"
	"encoding/binary"
	"slices"
	"testing"
	"time"
)

// BenchmarkRelayEcho is one packet at a time through a stream and back: the
// endpoint sends RTP to the A-facing port, the node echoes what reaches it
// to the B-facing port, the endpoint waits for it. With 500 more streams
// open and idle (a busy relay's calls) it reports the round trip's p50 and
// p99 in µs; ns/op is the mean round trip.
func BenchmarkRelayEcho(b *testing.B) { benchEcho(b, testPool(b, 2*501)) }

func benchEcho(b *testing.B, p *Pool) {
	const idle = 500
	m, _ := NewMetrics(nil)
	ep, node := newParty(b), newParty(b)
	for i := range idle {
		s, err := NewStream(context.Background(), p, Config{Metrics: m}, "idle", i)
		if err != nil {
			b.Fatal(err)
		}
		s.SetPeerA(ep.addrRTCP(), ep.addrRTCP(), false)
		s.SetPeerB(node.addrRTCP(), node.addrRTCP(), false)
		defer s.Close()
	}
	s, err := NewStream(context.Background(), p, Config{Metrics: m}, "echo", idle)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.SetPeerA(ep.addrRTP(), ep.addrRTCP(), false)
	s.SetPeerB(node.addrRTP(), node.addrRTCP(), false)
	a, _ := s.LocalA()
	bb, _ := s.LocalB()
	done := make(chan struct{})
	go func() { // the node
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, err := node.rtp.Read(buf)
			if err != nil {
				return
			}
			_, _ = node.rtp.WriteToUDPAddrPort(buf[:n], bb)
		}
	}()
	defer func() { _ = node.rtp.Close(); <-done }()
	pkt := rtpPkt(b, 0xa, 0, 160)
	buf := make([]byte, 2048)
	rtts := make([]time.Duration, 0, 1<<16)
	_ = ep.rtp.SetReadDeadline(time.Now().Add(time.Minute))
	for i := 0; b.Loop(); i++ {
		binary.BigEndian.PutUint16(pkt[2:], uint16(i))
		start := time.Now()
		send(b, ep.rtp, a, pkt)
		if _, err := ep.rtp.Read(buf); err != nil {
			b.Fatal(err)
		}
		if len(rtts) < cap(rtts) {
			rtts = append(rtts, time.Since(start))
		}
	}
	b.StopTimer()
	slices.Sort(rtts)
	q := func(f float64) float64 { return float64(rtts[int(f*float64(len(rtts)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}
