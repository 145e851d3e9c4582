//go:build unix && !linux

package relay

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// udpSocket is a relay socket off Linux: the net package's, whose
// netpoller readiness the socket's goroutine waits on (worker_other.go).
type udpSocket struct {
	c   *net.UDPConn
	raw syscall.RawConn
}

// bindUDP binds a UDP socket to port on the pool's address.
func (p *Pool) bindUDP(port int) (udpSocket, uintptr, error) {
	c, err := net.ListenUDP(p.network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.ip, uint16(port))))
	if err != nil {
		return udpSocket{}, 0, fmt.Errorf("relay: bind %s port %d: %w", p.ip, port, err)
	}
	raw, err := c.SyscallConn()
	var fd uintptr
	if err == nil {
		err = raw.Control(func(f uintptr) { fd = f })
	}
	if err != nil {
		_ = c.Close()
		return udpSocket{}, 0, fmt.Errorf("relay: port %d: %w", port, err)
	}
	return udpSocket{c: c, raw: raw}, fd, nil
}

func (s udpSocket) close() error { return s.c.Close() }
