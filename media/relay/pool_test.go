package relay

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// testPool returns a pool of pairs port pairs at a random place in
// 40000-60000 whose ports were all free a moment ago, so parallel test runs
// and other engineers' tests rarely share ports.
func testPool(t testing.TB, pairs int) *Pool {
	t.Helper()
	// 10000-19999: below the kernel's ephemeral ports (32768-60999),
	// which every client socket of a parallel test package draws from,
	// and below the integration tests' relay ranges (20000-32767).
	for range 200 {
		min := 10000 + 2*rand.IntN((10000-2*pairs)/2)
		if !rangeFree(min, min+2*pairs-1) {
			continue
		}
		p, err := NewPool(loopback, min, min+2*pairs-1)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Fatal("no free port range found")
	return nil
}

func rangeFree(min, max int) bool {
	for port := min; port <= max; port++ {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(port))))
		if err != nil {
			return false
		}
		_ = c.Close()
	}
	return true
}

func TestNewPool_ValidatesRange(t *testing.T) {
	tests := []struct {
		name     string
		ip       netip.Addr
		min, max int
		ok       bool
	}{
		{"valid", loopback, 40000, 40099, true},
		{"one pair", loopback, 40000, 40001, true},
		{"wildcard", netip.IPv4Unspecified(), 40000, 40099, true},
		{"odd min", loopback, 40001, 40099, false},
		{"min equals max", loopback, 40000, 40000, false},
		{"min above max", loopback, 40010, 40000, false},
		{"below 1024", loopback, 1000, 2000, false},
		{"above 65535", loopback, 65000, 65536, false},
		{"no IP", netip.Addr{}, 40000, 40099, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPool(tt.ip, tt.min, tt.max)
			if (err == nil) != tt.ok {
				t.Fatalf("NewPool(%v, %d, %d) error = %v, want ok=%v", tt.ip, tt.min, tt.max, err, tt.ok)
			}
		})
	}
}

func TestPool_AllocatesPairsRoundRobinUntilExhausted(t *testing.T) {
	p := testPool(t, 3)
	var pairs []*PortPair
	for i := range 3 {
		pp, err := p.Allocate(false)
		if err != nil {
			t.Fatalf("allocate %d: %v", i, err)
		}
		rtp, rtcp := pp.Addrs()
		if want := p.min + 2*i; int(rtp.Port()) != want || int(rtcp.Port()) != want+1 || rtp.Addr() != loopback {
			t.Fatalf("pair %d = %v/%v, want ports %d/%d", i, rtp, rtcp, want, want+1)
		}
		pairs = append(pairs, pp)
	}
	if got := p.InUse(); got != 6 {
		t.Fatalf("InUse = %d, want 6", got)
	}
	if _, err := p.Allocate(false); !errors.Is(err, ErrExhausted) {
		t.Fatalf("allocate from a full range: %v, want ErrExhausted", err)
	}
	if err := pairs[1].Close(); err != nil {
		t.Fatal(err)
	}
	if err := pairs[1].Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	pp, err := p.Allocate(true)
	if err != nil {
		t.Fatalf("allocate after a free: %v", err)
	}
	if rtp, rtcp := pp.Addrs(); int(rtp.Port()) != p.min+2 || rtcp != rtp || !pp.mux {
		t.Fatalf("mux pair = %v/%v, want the freed port %d for both", rtp, rtcp, p.min+2)
	}
	if got := p.InUse(); got != 5 {
		t.Fatalf("InUse with a mux pair = %d, want 5", got)
	}
	for _, pp := range append(pairs, pp) {
		_ = pp.Close()
	}
	if got := p.InUse(); got != 0 {
		t.Fatalf("InUse after closing all = %d, want 0", got)
	}
}

func TestPool_SkipsPortsBoundElsewhere(t *testing.T) {
	p := testPool(t, 3)
	// Someone else holds the RTCP port of the first pair and the RTP port
	// of the second.
	for _, port := range []int{p.min + 1, p.min + 2} {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(port))))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	pp, err := p.Allocate(false)
	if err != nil {
		t.Fatal(err)
	}
	defer pp.Close()
	if rtp, _ := pp.Addrs(); int(rtp.Port()) != p.min+4 {
		t.Fatalf("allocated port %d, want %d (the only free pair)", rtp.Port(), p.min+4)
	}
	if got := p.InUse(); got != 2 {
		t.Fatalf("InUse = %d, want 2 (failed binds released)", got)
	}
	if _, err := p.Allocate(false); !errors.Is(err, ErrExhausted) {
		t.Fatalf("second allocate: %v, want ErrExhausted", err)
	}
}

func TestPool_AdvertisedAddress(t *testing.T) {
	free := testPool(t, 1)
	adv := netip.MustParseAddr("192.0.2.10")
	p, err := NewPool(loopback, free.min, free.max, WithAdvertise(adv))
	if err != nil {
		t.Fatal(err)
	}
	pp, err := p.Allocate(false)
	if err != nil {
		t.Fatal(err)
	}
	defer pp.Close()
	rtp, rtcp := pp.Addrs()
	if want := netip.AddrPortFrom(adv, uint16(p.min)); rtp != want || rtcp != netip.AddrPortFrom(adv, uint16(p.min+1)) {
		t.Fatalf("Addrs = %v %v, want %v and the next port", rtp, rtcp, want)
	}
	for _, port := range []int{p.min, p.min + 1} { // bound on the pool's address
		if c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(port)))); err == nil {
			_ = c.Close()
			t.Fatalf("port %d on %v not bound by the pair", port, loopback)
		}
	}
}

func TestStream_CloseFreesPorts_1000Streams(t *testing.T) {
	const n = 1000
	p := testPool(t, 2*n+1) // one pair over: the next stream gets its A side only
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	streams := make([]*Stream, 0, n)
	for i := range n {
		s, err := NewStream(context.Background(), p, Config{Metrics: m}, "call-1000", i)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		streams = append(streams, s)
	}
	if got := p.InUse(); got != 4*n {
		t.Fatalf("InUse = %d, want %d", got, 4*n)
	}
	if _, err := NewStream(context.Background(), p, Config{Metrics: m}, "one-too-many", 0); !errors.Is(err, ErrExhausted) {
		t.Fatalf("stream beyond the range: %v, want ErrExhausted", err)
	}
	if got := p.InUse(); got != 4*n {
		t.Fatalf("InUse after a failed stream = %d, want %d (half-allocated pair released)", got, 4*n)
	}
	for _, s := range streams {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.InUse(); got != 0 {
		t.Fatalf("InUse after closing %d streams = %d, want 0", n, got)
	}
	if got := gauge(t, m.ports); got != 0 {
		t.Fatalf("ports_in_use = %v, want 0", got)
	}
	if got := gauge(t, m.streams); got != 0 {
		t.Fatalf("streams_active = %v, want 0", got)
	}
	// Every port is bindable again.
	s, err := NewStream(context.Background(), p, Config{Metrics: m}, "after", 0)
	if err != nil {
		t.Fatalf("stream after freeing: %v", err)
	}
	_ = s.Close()
}
