package relay

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

// party is a test endpoint or media node: an RTP and an RTCP socket on
// loopback.
type party struct {
	t         testing.TB
	rtp, rtcp *net.UDPConn
}

func newParty(t testing.TB) *party {
	t.Helper()
	p := &party{t: t}
	for _, c := range []**net.UDPConn{&p.rtp, &p.rtcp} {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		*c = conn
	}
	return p
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *party) addrs() (rtp, rtcp netip.AddrPort) { return addrOf(p.rtp), addrOf(p.rtcp) }

func send(t testing.TB, from *net.UDPConn, to netip.AddrPort, pkt []byte) {
	t.Helper()
	if _, err := from.WriteToUDPAddrPort(pkt, to); err != nil {
		t.Fatal(err)
	}
}

// expect reads the next datagram on c and checks it is want.
func expect(t testing.TB, c *net.UDPConn, want []byte) netip.AddrPort {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, src, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("read on %v: %v", addrOf(c), err)
	}
	if !bytes.Equal(buf[:n], want) {
		t.Fatalf("got %x from %v on %v, want %x", buf[:n], src, addrOf(c), want)
	}
	return src
}

// expectNone checks nothing arrives on c for a moment. Tests use it only
// where no later packet can prove the absence.
func expectNone(t testing.TB, c *net.UDPConn) {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if n, src, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("unexpected %x from %v on %v", buf[:n], src, addrOf(c))
	}
}

func rtpPkt(t testing.TB, ssrc uint32, seq uint16, payload int) []byte {
	t.Helper()
	p := rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: ssrc},
		Payload: bytes.Repeat([]byte{byte(seq)}, payload),
	}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rtcpPkt is a receiver report without report blocks (RFC 3550 6.4.2).
func rtcpPkt(ssrc uint32) []byte {
	return []byte{0x80, 201, 0, 1, byte(ssrc >> 24), byte(ssrc >> 16), byte(ssrc >> 8), byte(ssrc)}
}

type harness struct {
	s    *Stream
	m    *Metrics
	a, b *party // the endpoint and the media node as announced in SDP
	aRTP, aRTCP,
	bRTP, bRTCP netip.AddrPort // the relay's ports facing them
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metrics = m
	s, err := NewStream(context.Background(), testPool(t, 4), cfg, "call-"+t.Name(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	h := &harness{s: s, m: m, a: newParty(t), b: newParty(t)}
	h.aRTP, h.aRTCP = s.LocalA()
	h.bRTP, h.bRTCP = s.LocalB()
	return h
}

// announce sets both peers to the parties' sockets without rtcp-mux.
func (h *harness) announce() {
	h.s.SetPeerA(h.a.addrRTP(), h.a.addrRTCP(), false)
	h.s.SetPeerB(h.b.addrRTP(), h.b.addrRTCP(), false)
}

func (p *party) addrRTP() netip.AddrPort  { return addrOf(p.rtp) }
func (p *party) addrRTCP() netip.AddrPort { return addrOf(p.rtcp) }

func (h *harness) packets(dir, kind string) float64 {
	return testutil.ToFloat64(h.m.packets.WithLabelValues(dir, kind))
}

func (h *harness) dropped(r dropReason) float64 { return testutil.ToFloat64(h.m.drop[r]) }

// waitDropped waits until the relay has dropped want packets for r: the
// order of packets arriving on different relay sockets is not defined.
func (h *harness) waitDropped(t testing.TB, r dropReason, want float64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for h.dropped(r) < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := h.dropped(r); got != want {
		t.Fatalf("%s drops = %v, want %v", dropLabels[r], got, want)
	}
}

func gauge(t testing.TB, g prometheus.Gauge) float64 { t.Helper(); return testutil.ToFloat64(g) }

func TestStream_RelaysRTPAndRTCPBothWays(t *testing.T) {
	h := newHarness(t, Config{})
	h.announce()

	// Stats are read while packets flow (run with -race).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				_, _ = h.s.Stats(SideA), h.s.Stats(SideB)
			}
		}
	})

	tests := []struct {
		name     string
		from     *net.UDPConn
		to       netip.AddrPort
		pkt      []byte
		at       *net.UDPConn
		wantFrom netip.AddrPort
	}{
		{"rtp a to b", h.a.rtp, h.aRTP, rtpPkt(t, 0xa, 1, 160), h.b.rtp, h.bRTP},
		{"rtp b to a", h.b.rtp, h.bRTP, rtpPkt(t, 0xb, 7, 80), h.a.rtp, h.aRTP},
		{"rtcp a to b", h.a.rtcp, h.aRTCP, rtcpPkt(0xa), h.b.rtcp, h.bRTCP},
		{"rtcp b to a", h.b.rtcp, h.bRTCP, rtcpPkt(0xb), h.a.rtcp, h.aRTCP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			send(t, tt.from, tt.to, tt.pkt)
			if src := expect(t, tt.at, tt.pkt); src != tt.wantFrom {
				t.Fatalf("relayed from %v, want the relay port %v", src, tt.wantFrom)
			}
		})
	}
	close(stop)
	wg.Wait()

	for side, want := range map[Side]DirStats{
		SideA: {Packets: 1, Bytes: uint64(len(tests[0].pkt)), SSRC: 0xa, RTCPPackets: 1},
		SideB: {Packets: 1, Bytes: uint64(len(tests[1].pkt)), SSRC: 0xb, RTCPPackets: 1},
	} {
		got := h.s.Stats(side)
		if got.LastPacket.IsZero() {
			t.Errorf("side %v LastPacket is zero", side)
		}
		got.LastPacket = time.Time{}
		if got != want {
			t.Errorf("Stats(%v) = %+v, want %+v", side, got, want)
		}
	}
	for _, c := range []struct{ dir, kind string }{{"a_to_b", "rtp"}, {"b_to_a", "rtp"}, {"a_to_b", "rtcp"}, {"b_to_a", "rtcp"}} {
		if got := h.packets(c.dir, c.kind); got != 1 {
			t.Errorf("packets_total{%s,%s} = %v, want 1", c.dir, c.kind, got)
		}
	}
	want := float64(len(tests[0].pkt) + len(tests[2].pkt))
	if got := testutil.ToFloat64(h.m.bytes.WithLabelValues("a_to_b")); got != want {
		t.Errorf("bytes_total{a_to_b} = %v, want %v", got, want)
	}
	if got := gauge(t, h.m.streams); got != 1 {
		t.Errorf("streams_active = %v, want 1", got)
	}
	if got := gauge(t, h.m.ports); got != 4 {
		t.Errorf("ports_in_use = %v, want 4", got)
	}
}

func TestStream_LatchesOntoRealSource(t *testing.T) {
	h := newHarness(t, Config{})
	h.announce()
	nat := newParty(t) // where the endpoint's packets really come from

	// Before the endpoint sends, B's media goes to the SDP address.
	toA := rtpPkt(t, 0xb, 1, 20)
	send(t, h.b.rtp, h.bRTP, toA)
	expect(t, h.a.rtp, toA)

	fromA := rtpPkt(t, 0xa, 1, 20)
	send(t, nat.rtp, h.aRTP, fromA)
	expect(t, h.b.rtp, fromA)
	rtcpA := rtcpPkt(0xa)
	send(t, nat.rtcp, h.aRTCP, rtcpA)
	expect(t, h.b.rtcp, rtcpA)
	if rtp, rtcp := h.s.Latched(SideA); rtp != nat.addrRTP() || rtcp != nat.addrRTCP() {
		t.Fatalf("Latched(A) = %v %v, want %v %v", rtp, rtcp, nat.addrRTP(), nat.addrRTCP())
	}

	toA = rtpPkt(t, 0xb, 2, 20)
	send(t, h.b.rtp, h.bRTP, toA)
	expect(t, nat.rtp, toA)
	toARTCP := rtcpPkt(0xb)
	send(t, h.b.rtcp, h.bRTCP, toARTCP)
	expect(t, nat.rtcp, toARTCP)

	// The announced address is still accepted, and does not move the latch.
	again := rtpPkt(t, 0xa, 2, 20)
	send(t, h.a.rtp, h.aRTP, again)
	expect(t, h.b.rtp, again)
	if rtp, _ := h.s.Latched(SideA); rtp != nat.addrRTP() {
		t.Fatalf("latch moved to %v", rtp)
	}
	expectNone(t, h.a.rtp) // nothing went to the SDP address after latching
}

func TestStream_ReannounceResetsLatch(t *testing.T) {
	h := newHarness(t, Config{})
	h.announce()
	first, moved, later := newParty(t), newParty(t), newParty(t)
	send(t, first.rtp, h.aRTP, rtpPkt(t, 0xa, 1, 10))
	expect(t, h.b.rtp, rtpPkt(t, 0xa, 1, 10))

	// A re-INVITE with the same address keeps the latch.
	h.s.SetPeerA(h.a.addrRTP(), h.a.addrRTCP(), false)
	if rtp, _ := h.s.Latched(SideA); rtp != first.addrRTP() {
		t.Fatalf("same-address re-announce: latched %v, want %v kept", rtp, first.addrRTP())
	}
	send(t, h.b.rtp, h.bRTP, rtpPkt(t, 0xb, 1, 10))
	expect(t, first.rtp, rtpPkt(t, 0xb, 1, 10))

	// A new address resets it: B's media goes to the new address ...
	h.s.SetPeerA(moved.addrRTP(), moved.addrRTCP(), false)
	if rtp, _ := h.s.Latched(SideA); rtp.IsValid() {
		t.Fatalf("latch %v survived a new address", rtp)
	}
	send(t, h.b.rtp, h.bRTP, rtpPkt(t, 0xb, 2, 10))
	expect(t, moved.rtp, rtpPkt(t, 0xb, 2, 10))
	// ... until the endpoint's first packet latches again, from anywhere.
	send(t, later.rtp, h.aRTP, rtpPkt(t, 0xa, 2, 10))
	expect(t, h.b.rtp, rtpPkt(t, 0xa, 2, 10))
	send(t, h.b.rtp, h.bRTP, rtpPkt(t, 0xb, 3, 10))
	expect(t, later.rtp, rtpPkt(t, 0xb, 3, 10))
	// The old latch is now foreign.
	send(t, first.rtp, h.aRTP, rtpPkt(t, 0xa, 3, 10))
	send(t, later.rtp, h.aRTP, rtpPkt(t, 0xa, 4, 10))
	expect(t, h.b.rtp, rtpPkt(t, 0xa, 4, 10))
	if got := h.dropped(dropForeign); got != 1 {
		t.Fatalf("foreign drops = %v, want 1", got)
	}
}

func TestStream_HoldAddressSendsNothing(t *testing.T) {
	h := newHarness(t, Config{})
	h.announce()
	hold := netip.AddrPortFrom(netip.IPv4Unspecified(), h.a.addrRTP().Port())
	h.s.SetPeerA(hold, netip.AddrPort{}, false)

	send(t, h.b.rtp, h.bRTP, rtpPkt(t, 0xb, 1, 10))
	send(t, h.b.rtcp, h.bRTCP, rtcpPkt(0xb))
	h.waitDropped(t, dropNoPeer, 2)
	// The endpoint resumes sending: that latches, and B's media flows again.
	send(t, h.a.rtp, h.aRTP, rtpPkt(t, 0xa, 1, 10))
	expect(t, h.b.rtp, rtpPkt(t, 0xa, 1, 10))
	send(t, h.b.rtp, h.bRTP, rtpPkt(t, 0xb, 2, 10))
	expect(t, h.a.rtp, rtpPkt(t, 0xb, 2, 10)) // not seq 1: that was dropped
	h.waitDropped(t, dropNoPeer, 2)
	// B's media while on hold still counts as B sending.
	if got := h.s.Stats(SideB).Packets; got != 2 {
		t.Fatalf("Stats(B).Packets = %d, want 2", got)
	}
}

func TestStream_NoPeerUntilAnnounced(t *testing.T) {
	h := newHarness(t, Config{})
	// Nobody announced anything: the endpoint's media has nowhere to go ...
	send(t, h.a.rtp, h.aRTP, rtpPkt(t, 0xa, 1, 10))
	h.waitDropped(t, dropNoPeer, 1)
	// ... but it latched A, so the node's media (sent before its answer is
	// processed) reaches A and latches B.
	send(t, h.b.rtp, h.bRTP, rtpPkt(t, 0xb, 1, 10))
	expect(t, h.a.rtp, rtpPkt(t, 0xb, 1, 10))
	send(t, h.a.rtp, h.aRTP, rtpPkt(t, 0xa, 2, 10))
	expect(t, h.b.rtp, rtpPkt(t, 0xa, 2, 10))
}

func TestStream_RTCPMuxOnOneSide(t *testing.T) {
	h := newHarness(t, Config{})
	h.s.SetPeerA(h.a.addrRTP(), netip.AddrPort{}, true) // the endpoint muxes
	h.s.SetPeerB(h.b.addrRTP(), h.b.addrRTCP(), false)

	tests := []struct {
		name     string
		from     *net.UDPConn
		to       netip.AddrPort
		pkt      []byte
		at       *net.UDPConn
		wantFrom netip.AddrPort
	}{
		{"rtp from the mux side", h.a.rtp, h.aRTP, rtpPkt(t, 0xa, 1, 10), h.b.rtp, h.bRTP},
		{"rtcp from the mux side leaves on the rtcp port", h.a.rtp, h.aRTP, rtcpPkt(0xa), h.b.rtcp, h.bRTCP},
		{"rtp to the mux side", h.b.rtp, h.bRTP, rtpPkt(t, 0xb, 1, 10), h.a.rtp, h.aRTP},
		{"rtcp to the mux side arrives on its rtp port", h.b.rtcp, h.bRTCP, rtcpPkt(0xb), h.a.rtp, h.aRTP},
		// payload type 72 is RTCP in mux only; without mux it is RTP.
		{"pt 72 without mux is rtp", h.b.rtp, h.bRTP, append([]byte{0x80, 72}, rtpPkt(t, 0xb, 2, 10)[2:]...), h.a.rtp, h.aRTP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			send(t, tt.from, tt.to, tt.pkt)
			if src := expect(t, tt.at, tt.pkt); src != tt.wantFrom {
				t.Fatalf("relayed from %v, want %v", src, tt.wantFrom)
			}
		})
	}
	if a, b := h.s.Stats(SideA), h.s.Stats(SideB); a.Packets != 1 || a.RTCPPackets != 1 || b.Packets != 2 || b.RTCPPackets != 1 {
		t.Fatalf("stats A %+v B %+v, want A 1 RTP 1 RTCP, B 2 RTP 1 RTCP", a, b)
	}
}

func TestStream_DropsGarbage(t *testing.T) {
	h := newHarness(t, Config{})
	h.announce()
	attacker := newParty(t)
	valid := rtpPkt(t, 0xa, 1, 10)
	withCSRC := rtpPkt(t, 0xa, 1, 0)
	withCSRC[0] |= 2 // claims two CSRCs it lacks
	withExt := rtpPkt(t, 0xa, 1, 0)
	withExt[0] |= 0x10 // extension bit, no room for the extension header
	extOverrun := append(append([]byte{}, valid[:12]...), 0xbe, 0xde, 0, 9, 0x10, 0xaa)
	extOverrun[0] |= 0x10 // extension says 36 bytes, 2 present

	tests := []struct {
		name string
		to   netip.AddrPort
		pkt  []byte
	}{
		{"empty", h.aRTP, nil},
		{"short", h.aRTP, valid[:11]},
		{"version 0", h.aRTP, append([]byte{0x00}, valid[1:]...)},
		{"version 1", h.aRTP, append([]byte{0x40}, valid[1:]...)},
		{"text", h.aRTP, []byte("GET / HTTP/1.1\r\nHost: relay\r\n\r\n")},
		{"csrc missing", h.aRTP, withCSRC},
		{"extension header missing", h.aRTP, withExt},
		{"extension overrun", h.aRTP, extOverrun},
		{"oversized", h.aRTP, append(append([]byte{}, valid...), make([]byte, maxPacket)...)},
		{"rtcp too short", h.aRTCP, rtcpPkt(0xa)[:4]},
		{"rtcp version 1", h.aRTCP, append([]byte{0x40}, rtcpPkt(0xa)[1:]...)},
	}
	for _, tt := range tests {
		send(t, attacker.rtp, tt.to, tt.pkt)
	}
	// Garbage arrived first but did not latch: the endpoint's media does.
	send(t, h.a.rtp, h.aRTP, valid)
	expect(t, h.b.rtp, valid)
	send(t, h.a.rtcp, h.aRTCP, rtcpPkt(0xa))
	expect(t, h.b.rtcp, rtcpPkt(0xa))
	if rtp, rtcp := h.s.Latched(SideA); rtp != h.a.addrRTP() || rtcp != h.a.addrRTCP() {
		t.Fatalf("Latched(A) = %v %v, want the endpoint", rtp, rtcp)
	}
	if got := h.dropped(dropInvalid); got != float64(len(tests)) {
		t.Fatalf("invalid drops = %v, want %d", got, len(tests))
	}
	if s := h.s.Stats(SideA); s.Packets != 1 || s.RTCPPackets != 1 {
		t.Fatalf("Stats(A) = %+v, want only the valid packets", s)
	}
}

func TestStream_ForeignSourceAfterLatchDropped(t *testing.T) {
	h := newHarness(t, Config{})
	h.announce()
	hijacker := newParty(t)
	send(t, h.a.rtp, h.aRTP, rtpPkt(t, 0xa, 1, 10))
	expect(t, h.b.rtp, rtpPkt(t, 0xa, 1, 10))
	send(t, h.b.rtp, h.bRTP, rtpPkt(t, 0xb, 1, 10))
	expect(t, h.a.rtp, rtpPkt(t, 0xb, 1, 10))

	send(t, hijacker.rtp, h.aRTP, rtpPkt(t, 0xe, 1, 10))
	send(t, hijacker.rtcp, h.aRTCP, rtcpPkt(0xe)) // latches RTCP: its first packet
	send(t, hijacker.rtp, h.bRTP, rtpPkt(t, 0xe, 2, 10))
	send(t, h.a.rtp, h.aRTP, rtpPkt(t, 0xa, 2, 10))
	expect(t, h.b.rtp, rtpPkt(t, 0xa, 2, 10))
	send(t, h.b.rtp, h.bRTP, rtpPkt(t, 0xb, 2, 10))
	expect(t, h.a.rtp, rtpPkt(t, 0xb, 2, 10))
	expect(t, h.b.rtcp, rtcpPkt(0xe))
	if got := h.dropped(dropForeign); got != 2 {
		t.Fatalf("foreign drops = %v, want 2", got)
	}
	if s := h.s.Stats(SideA); s.Packets != 2 || s.SSRC != 0xa {
		t.Fatalf("Stats(A) = %+v, want the endpoint's 2 packets only", s)
	}
}

func TestStream_SequenceGapsAndClock(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	h := newHarness(t, Config{Clock: func() time.Time { return now }, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	h.announce()
	steps := []struct {
		ssrc uint32
		seq  uint16
	}{
		{0xa, 65533}, {0xa, 65534}, {0xa, 2}, // 65535, 0, 1 lost across the wrap
		{0xa, 1},               // late
		{0xb, 100}, {0xb, 103}, // new SSRC restarts: 101, 102 lost
		{0xb, 103}, // duplicate
	}
	var bytes uint64
	for _, st := range steps {
		pkt := rtpPkt(t, st.ssrc, st.seq, 20)
		bytes += uint64(len(pkt))
		send(t, h.a.rtp, h.aRTP, pkt)
		expect(t, h.b.rtp, pkt)
	}
	want := DirStats{Packets: uint64(len(steps)), Bytes: bytes, Lost: 5, SSRC: 0xb, LastPacket: now}
	if got := h.s.Stats(SideA); !got.LastPacket.Equal(want.LastPacket) || got.Packets != want.Packets ||
		got.Bytes != want.Bytes || got.Lost != want.Lost || got.SSRC != want.SSRC {
		t.Fatalf("Stats(A) = %+v, want %+v", got, want)
	}
	if got := h.s.Stats(SideB); got != (DirStats{}) {
		t.Fatalf("Stats(B) = %+v, want zero (B sent nothing)", got)
	}
}

func TestStream_CloseIsIdempotentAndFollowsContext(t *testing.T) {
	pool := testPool(t, 4)
	m, _ := NewMetrics(nil)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := NewStream(ctx, pool, Config{Metrics: m}, "ctx", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := pool.InUse(); got != 4 {
		t.Fatalf("InUse = %d, want 4", got)
	}
	cancel()
	deadline := time.Now().Add(2 * time.Second)
	for pool.InUse() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := pool.InUse(); got != 0 {
		t.Fatalf("InUse after the context ended = %d, want 0", got)
	}
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got := gauge(t, m.streams); got != 0 {
		t.Fatalf("streams_active = %v, want 0", got)
	}
	if _, err := NewStream(ctx, pool, Config{}, "late", 0); err == nil {
		t.Fatal("NewStream with an ended context succeeded")
	}
}
