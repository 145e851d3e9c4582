//go:build unix && !(linux && (amd64 || arm64))

package relay

import (
	"net/netip"
	"syscall"
)

// sockaddr is unused off Linux: the syscall package builds the addresses.
type sockaddr struct{}

// recvFrom reads one datagram from the non-blocking socket fd (the
// portable, allocating path; Linux has the raw one).
func recvFrom(fd uintptr, buf []byte, _ *sockaddr) (int, netip.AddrPort, syscall.Errno) {
	n, from, err := syscall.Recvfrom(int(fd), buf, 0)
	if err != nil {
		return 0, netip.AddrPort{}, errnoOf(err)
	}
	switch sa := from.(type) {
	case *syscall.SockaddrInet4:
		return n, netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), 0
	case *syscall.SockaddrInet6:
		return n, netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)), 0
	}
	return n, netip.AddrPort{}, 0
}

// sendTo sends pkt to dst from the non-blocking socket fd of family.
func sendTo(fd uintptr, family int, pkt []byte, dst netip.AddrPort, _ *sockaddr) syscall.Errno {
	var to syscall.Sockaddr
	switch a := dst.Addr(); {
	case family == syscall.AF_INET && a.Is4():
		to = &syscall.SockaddrInet4{Port: int(dst.Port()), Addr: a.As4()}
	case family == syscall.AF_INET6 && a.IsValid():
		to = &syscall.SockaddrInet6{Port: int(dst.Port()), Addr: a.As16()}
	default:
		return syscall.EAFNOSUPPORT
	}
	return errnoOf(syscall.Sendto(int(fd), pkt, 0, to))
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return syscall.EINVAL
}
