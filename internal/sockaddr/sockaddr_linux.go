//go:build linux && (amd64 || arm64)

// Package sockaddr encodes and decodes the struct sockaddr_in and
// sockaddr_in6 that raw recvfrom/recvmmsg and sendto take, for the SIP
// listener (proxy/rawudp_linux.go) and the RTP relay (media/relay), which
// both call those syscalls directly to skip the runtime's syscall state.
package sockaddr

import (
	"net/netip"
	"syscall"
	"unsafe"
)

// Raw is room for a struct sockaddr_in or sockaddr_in6.
type Raw = syscall.RawSockaddrInet6

// Encode writes dst for a socket of family (AF_INET or AF_INET6) into sa
// and returns its length, 0 when dst cannot be reached from such a
// socket: an IPv6 address from an IPv4 socket, or an address with a zone
// (the caller leaves those to the net package). An IPv4 destination on an
// IPv6 socket goes v4-mapped; a v4-mapped one on an IPv4 socket unmapped.
func Encode(sa *Raw, family int, dst netip.AddrPort) uintptr {
	a, p := dst.Addr(), dst.Port()
	if family == syscall.AF_INET {
		a = a.Unmap()
	}
	switch {
	case family == syscall.AF_INET && a.Is4():
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: a.As4()}
		putPort(&sa4.Port, p)
		return unsafe.Sizeof(*sa4)
	case family == syscall.AF_INET6 && a.IsValid() && a.Zone() == "":
		*sa = syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Addr: a.As16()}
		putPort(&sa.Port, p)
		return unsafe.Sizeof(*sa)
	}
	return 0
}

// Decode reads the address a recvfrom wrote; the zero AddrPort for a
// family that is neither IPv4 nor IPv6.
func Decode(sa *Raw) netip.AddrPort {
	switch sa.Family {
	case syscall.AF_INET:
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), Port(&sa4.Port))
	case syscall.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), Port(&sa.Port))
	}
	return netip.AddrPort{}
}

// Port reads a port in network byte order.
func Port(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}
