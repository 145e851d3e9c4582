//go:build linux && (amd64 || arm64)

package relay

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The raw bind and close: a socket is bound to the pool's address and
// port (it receives there), a port already taken is refused with
// EADDRINUSE as unix.Bind refuses it, and closing frees the port.
func TestBindUDP_RawBindAndClose(t *testing.T) {
	for _, tc := range []struct {
		name, pool, peer string
		opts             []PoolOption
	}{
		{"ipv4", "127.0.0.1", "127.0.0.1", nil},
		{"ipv6", "::1", "::1", nil},
		{"dual-stack, an IPv4 peer", "::", "127.0.0.1", []PoolOption{WithAdvertise(netip.IPv6Loopback())}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPool(netip.MustParseAddr(tc.pool), 40000, 40100, tc.opts...)
			if err != nil {
				t.Skipf("pool on %s: %v", tc.pool, err)
			}
			probe, err := net.ListenPacket("udp", net.JoinHostPort(tc.peer, "0"))
			if err != nil {
				t.Skipf("no %s here: %v", tc.peer, err)
			}
			port := probe.LocalAddr().(*net.UDPAddr).Port
			probe.Close() // a port free a moment ago
			s, fd, err := p.bindUDP(port)
			if err != nil {
				t.Fatalf("bind port %d: %v", port, err)
			}
			var sa unix.Sockaddr
			if sa, err = unix.Getsockname(int(fd)); err != nil {
				t.Fatal(err)
			}
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				if a.Port != port || netip.AddrFrom4(a.Addr) != netip.MustParseAddr(tc.pool) {
					t.Fatalf("bound to %v:%d, want %s:%d", a.Addr, a.Port, tc.pool, port)
				}
			case *unix.SockaddrInet6:
				if a.Port != port || netip.AddrFrom16(a.Addr) != netip.MustParseAddr(tc.pool) {
					t.Fatalf("bound to %v:%d, want %s:%d", a.Addr, a.Port, tc.pool, port)
				}
			}
			peer, err := net.Dial("udp", net.JoinHostPort(tc.peer, strconv.Itoa(port)))
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			if _, err := peer.Write([]byte("rtp")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			var n int
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
				if n, err = unix.Read(int(fd), buf); err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil || string(buf[:n]) != "rtp" {
				t.Fatalf("bound socket read %q, %v", buf[:n], err)
			}

			if _, _, err := p.bindUDP(port); !errors.Is(err, unix.EADDRINUSE) {
				t.Fatalf("second bind of port %d = %v, want EADDRINUSE", port, err)
			}
			if err := s.close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			again, _, err := p.bindUDP(port)
			if err != nil {
				t.Fatalf("bind after close: %v (the close did not free the port)", err)
			}
			again.close()
		})
	}
}
