package relay

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// BenchmarkHandle measures the per-packet path alone (check, count, latch
// test, one sendto on loopback to a socket nobody drains) for each kind of
// packet it meets; rtp_160_no_send is the same path without the syscall.
func BenchmarkHandle(b *testing.B) {
	rich := rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 1, SSRC: 0xa, CSRC: []uint32{1, 2, 3}},
		Payload: make([]byte, 1000),
	}
	if err := rich.SetExtension(1, []byte{1, 2, 3}); err != nil {
		b.Fatal(err)
	}
	if err := rich.SetExtension(3, []byte{4, 5}); err != nil {
		b.Fatal(err)
	}
	richPkt, err := rich.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name    string
		ch      channel
		pkt     []byte
		foreign bool
		drop    dropReason
		seq     bool // rewrite the sequence number per packet
		hold    bool // B on hold: everything but the sendto
	}{
		{name: "rtp_160", ch: chRTP, pkt: rtpPkt(b, 0xa, 1, 160), seq: true, drop: numDropReasons},
		{name: "rtp_csrc_ext_1000", ch: chRTP, pkt: richPkt, seq: true, drop: numDropReasons},
		{name: "rtp_160_no_send", ch: chRTP, pkt: rtpPkt(b, 0xa, 1, 160), seq: true, hold: true, drop: dropNoPeer},
		{name: "rtcp", ch: chRTCP, pkt: rtcpPkt(0xa), drop: numDropReasons},
		{name: "drop_foreign", ch: chRTP, pkt: rtpPkt(b, 0xa, 1, 160), foreign: true, drop: dropForeign},
		{name: "drop_invalid", ch: chRTP, pkt: []byte("not rtp at all"), drop: dropInvalid},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h := newHarness(b, Config{})
			h.announce()
			if c.hold {
				h.s.SetPeerB(netip.AddrPortFrom(netip.IPv4Unspecified(), 9), netip.AddrPort{}, false)
			}
			r := newReader(h.s, &h.s.legs[SideA], &h.s.legs[SideB], c.ch)
			src := h.a.addrRTP()
			if c.ch == chRTCP {
				src = h.a.addrRTCP()
			}
			r.handle(rtpPkt(b, 0xa, 0, 10), src) // latch
			if c.foreign {
				src = netip.AddrPortFrom(loopback, 9)
			}
			pkt := append([]byte(nil), c.pkt...)
			b.ReportAllocs()
			b.SetBytes(int64(len(pkt)))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if c.seq {
					binary.BigEndian.PutUint16(pkt[2:], uint16(i))
				}
				r.handle(pkt, src)
			}
			b.StopTimer()
			if c.drop < numDropReasons && h.dropped(c.drop) == 0 {
				b.Fatalf("expected %s drops", dropLabels[c.drop])
			}
			if c.drop == numDropReasons && h.dropped(dropInvalid)+h.dropped(dropSendError) > 0 {
				b.Fatal("packets dropped")
			}
		})
	}
}

// BenchmarkRelayLoopback sends RTP from an endpoint socket through a Stream
// (A-facing socket, the pool's worker, B-facing socket) to a node socket
// over loopback, with up to 64 packets in flight, and reports packets/s.
// allocs/op covers every goroutine, the relay's included.
func BenchmarkRelayLoopback(b *testing.B) {
	h := newHarness(b, Config{})
	h.announce()
	pkt := rtpPkt(b, 0xa, 0, 160)
	const window = 64
	inflight := make(chan struct{}, window)
	failed := make(chan error, 1)
	done := make(chan struct{})

	// Warm up: latch and let the worker reach its steady state.
	for i := range 100 {
		binary.BigEndian.PutUint16(pkt[2:], uint16(i))
		send(b, h.a.rtp, h.aRTP, pkt)
		expect(b, h.b.rtp, pkt)
	}
	_ = h.b.rtp.SetReadDeadline(time.Now().Add(time.Minute))
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	b.ResetTimer()
	start := time.Now()
	n := b.N
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for range n {
			if _, _, err := h.b.rtp.ReadFromUDPAddrPort(buf); err != nil {
				failed <- err
				return
			}
			<-inflight
		}
	}()
	for i := range n {
		select {
		case inflight <- struct{}{}:
		case err := <-failed:
			b.Fatalf("after %d packets: %v", i, err)
		}
		binary.BigEndian.PutUint16(pkt[2:], uint16(100+i))
		if _, err := h.a.rtp.WriteToUDPAddrPort(pkt, h.aRTP); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case err := <-failed:
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "packets/s")
	if lost := h.s.Stats(SideA).Lost; lost != 0 {
		b.Fatalf("relay saw %d lost", lost)
	}
}
