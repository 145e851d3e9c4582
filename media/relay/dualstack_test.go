package relay

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// dualPool is a pool bound to "::" advertising 127.0.0.1 and ::1; it skips
// the test when this machine has no IPv6 loopback.
func dualPool(t *testing.T, pairs int) *Pool {
	t.Helper()
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	for range 200 {
		min := 10000 + 2*rand.IntN((10000-2*pairs)/2)
		p, err := NewPool(netip.IPv6Unspecified(), min, min+2*pairs-1,
			WithAdvertise(netip.MustParseAddr("127.0.0.1")), WithAdvertise(netip.IPv6Loopback()))
		if err != nil {
			t.Fatal(err)
		}
		pp, err := p.Allocate(false) // is the range free on both families?
		if err != nil {
			continue
		}
		_ = pp.Close()
		return p
	}
	t.Fatal("no free port range found")
	return nil
}

// partyOn is a party whose sockets are on ip.
func partyOn(t *testing.T, ip netip.Addr) *party {
	t.Helper()
	p := &party{t: t}
	for _, c := range []**net.UDPConn{&p.rtp, &p.rtcp} {
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		*c = conn
	}
	return p
}

// A dual-stack relay anchors an IPv6 endpoint to an IPv4 node: SDP toward
// each side names the relay address of that side's family, RTP and RTCP
// flow both ways, and each side's latch holds its own family's address
// (an IPv4 source arrives v4-mapped on the "::" socket and is read as
// plain IPv4).
func TestDualStack_IPv6EndpointIPv4Node(t *testing.T) {
	pool := dualPool(t, 4)
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStream(context.Background(), pool, Config{Metrics: m}, "call-dual", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := partyOn(t, netip.IPv6Loopback())             // the endpoint
	b := partyOn(t, netip.MustParseAddr("127.0.0.1")) // the node
	aRTP, aRTCP := s.Local(SideA, true)               // what the endpoint's SDP is given
	bRTP, bRTCP := s.Local(SideB, false)              // what the node's SDP is given
	if !aRTP.Addr().Is6() || !aRTCP.Addr().Is6() || !bRTP.Addr().Is4() || !bRTCP.Addr().Is4() {
		t.Fatalf("endpoint side %v %v, node side %v %v: want ::1 toward the endpoint, 127.0.0.1 toward the node", aRTP, aRTCP, bRTP, bRTCP)
	}
	if r, _ := s.Local(SideA, false); r.Addr() != bRTP.Addr() {
		t.Fatalf("IPv4 address toward an IPv4 side A = %v, want %v", r, bRTP.Addr())
	}
	s.SetPeerA(a.addrRTP(), a.addrRTCP(), false)
	s.SetPeerB(b.addrRTP(), b.addrRTCP(), false)
	for i := range 3 {
		pkt := rtpPkt(t, 0xa1, uint16(i), 160)
		send(t, a.rtp, aRTP, pkt)
		expect(t, b.rtp, pkt)
		pkt = rtpPkt(t, 0xb2, uint16(i), 160)
		send(t, b.rtp, bRTP, pkt)
		if src := expect(t, a.rtp, pkt); src.Addr() != netip.IPv6Loopback() {
			t.Fatalf("the endpoint got RTP from %v, want from ::1", src)
		}
	}
	send(t, a.rtcp, aRTCP, rtcpPkt(0xa1))
	expect(t, b.rtcp, rtcpPkt(0xa1))
	send(t, b.rtcp, bRTCP, rtcpPkt(0xb2))
	expect(t, a.rtcp, rtcpPkt(0xb2))
	if rtp, _ := s.Latched(SideB); rtp != b.addrRTP() {
		t.Fatalf("node side latched %v, want %v (plain IPv4, not v4-mapped)", rtp, b.addrRTP())
	}
	if rtp, _ := s.Latched(SideA); rtp != a.addrRTP() {
		t.Fatalf("endpoint side latched %v, want %v", rtp, a.addrRTP())
	}
}

func TestDualStack_NeedsAnAddressToAdvertise(t *testing.T) {
	if _, err := NewPool(netip.IPv6Unspecified(), 40000, 40099); err == nil {
		t.Fatal("a dual-stack pool without an address to advertise was accepted")
	}
	p, err := NewPool(netip.IPv6Unspecified(), 40000, 40099, WithAdvertise(netip.IPv6Loopback()))
	if err != nil {
		t.Fatal(err)
	}
	if !p.DualStack() || p.advertise != netip.IPv6Loopback() {
		t.Fatalf("dual %v, advertise %v: want dual-stack advertising ::1", p.DualStack(), p.advertise)
	}
	if v4, err := NewPool(netip.MustParseAddr("127.0.0.1"), 40000, 40099); err != nil || v4.DualStack() {
		t.Fatalf("an IPv4 pool: dual %v, %v", v4 != nil && v4.DualStack(), err)
	}
}
