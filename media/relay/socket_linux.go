//go:build linux

package relay

import (
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// udpSocket is a relay socket on Linux: a bare non-blocking descriptor,
// which only its worker's epoll watches. A socket from the net package
// would also sit in the runtime's netpoller, which then harvested an
// event nobody waits for on every packet (a third of sysmon's and the
// netpoller's time in the profile of the relay at 5000 packets/s).
type udpSocket struct {
	fd int
}

// bindUDP binds a non-blocking UDP socket to port on the pool's address.
func (p *Pool) bindUDP(port int) (udpSocket, uintptr, error) {
	fd, err := unix.Socket(p.family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return udpSocket{}, 0, fmt.Errorf("relay: socket for port %d: %w", port, err)
	}
	if p.family == unix.AF_INET6 {
		// An IPv6 pool binds IPv6 only, as net.ListenUDP("udp6") does; a
		// dual-stack one ("::") takes IPv4 too, v4-mapped, as "udp" does.
		v6only := 1
		if p.DualStack() {
			v6only = 0
		}
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only)
	}
	if err == nil {
		err = p.bindFD(fd, port) // socket_raw_linux.go
	}
	if err != nil {
		_ = closeFD(fd)
		return udpSocket{}, 0, fmt.Errorf("relay: bind %s port %d: %w", p.ip, port, err)
	}
	return udpSocket{fd: fd}, uintptr(fd), nil
}

// sockaddr is the pool's address at port, for unix.Bind.
func (p *Pool) sockaddr(port int) unix.Sockaddr {
	if p.family == unix.AF_INET {
		return &unix.SockaddrInet4{Port: port, Addr: p.ip.As4()}
	}
	return &unix.SockaddrInet6{Port: port, Addr: p.ip.As16(), ZoneId: zoneID(p.ip.Zone())}
}

// zoneID is the interface index of an IPv6 zone (a name or a number).
func zoneID(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	n, _ := strconv.ParseUint(zone, 10, 32)
	return uint32(n)
}

func (s udpSocket) close() error {
	if err := closeFD(s.fd); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}
