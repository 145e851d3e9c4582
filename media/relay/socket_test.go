package relay

import (
	"context"
	"net"
	"net/netip"
	"testing"
)

// The relay's sockets bind the pool's address in its family, and relay
// both ways on it.
func TestStream_RelaysOnEachFamily(t *testing.T) {
	for _, tt := range []struct {
		name, network string
		ip            netip.Addr
	}{
		{"ipv4", "udp4", loopback},
		{"ipv6", "udp6", netip.IPv6Loopback()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			free := testPool(t, 2)
			p, err := NewPool(tt.ip, free.min, free.max)
			if err != nil {
				t.Fatal(err)
			}
			listen := func() *net.UDPConn {
				c, err := net.ListenUDP(tt.network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(tt.ip, 0)))
				if err != nil {
					t.Skipf("no %s loopback: %v", tt.name, err)
				}
				t.Cleanup(func() { _ = c.Close() })
				return c
			}
			ep, node := listen(), listen()
			s, err := NewStream(context.Background(), p, Config{}, "family", 0)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.SetPeerA(addrOf(ep), netip.AddrPort{}, true)
			s.SetPeerB(addrOf(node), netip.AddrPort{}, true)
			a, _ := s.LocalA()
			b, _ := s.LocalB()
			if a.Addr() != tt.ip || b.Addr() != tt.ip {
				t.Fatalf("local addresses %v %v, want on %v", a, b, tt.ip)
			}
			pkt := rtpPkt(t, 0xa, 1, 20)
			send(t, ep, a, pkt)
			if src := expect(t, node, pkt); src != b {
				t.Fatalf("relayed from %v, want %v", src, b)
			}
			back := rtpPkt(t, 0xb, 1, 20)
			send(t, node, b, back)
			if src := expect(t, ep, back); src != a {
				t.Fatalf("relayed back from %v, want %v", src, a)
			}
			// The port is taken on the pool's address.
			if c, err := net.ListenUDP(tt.network, net.UDPAddrFromAddrPort(a)); err == nil {
				_ = c.Close()
				t.Fatalf("%v not bound by the stream", a)
			}
		})
	}
}
