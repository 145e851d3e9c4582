//go:build linux && (amd64 || arm64)

package relay

import (
	"net/netip"
	"syscall"
	"unsafe"
)

// The per-packet syscalls. The relay's sockets are non-blocking (the net
// package made them), so recvfrom and sendto return at once: they go
// through syscall.RawSyscall6, which skips the runtime's entersyscall and
// exitsyscall. Those cost little alone, but each one may wake sysmon from
// its deep sleep (a futex wake and a thread switch per packet on an
// otherwise idle process): the profile of the relay at 5000 packets/s had
// sysmon at 12 % of the process's CPU. Readiness comes from the workers'
// epoll instances (worker_linux.go), so an idle socket costs neither a
// goroutine nor a thread.

// sockaddr is room for a struct sockaddr_in or sockaddr_in6.
type sockaddr = syscall.RawSockaddrInet6

// recvFrom reads one datagram from the non-blocking socket fd into buf;
// errno is syscall.EAGAIN when nothing is queued.
func recvFrom(fd uintptr, buf []byte, sa *sockaddr) (int, netip.AddrPort, syscall.Errno) {
	salen := uint32(unsafe.Sizeof(*sa))
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
		uintptr(unsafe.Pointer(unsafe.SliceData(buf))), uintptr(len(buf)), 0,
		uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&salen)))
	if errno != 0 {
		return 0, netip.AddrPort{}, errno
	}
	return int(n), decodeSockaddr(sa), 0
}

// sendTo sends pkt to dst from the non-blocking socket fd; a socket
// without room (EAGAIN) is an error like any other: late RTP is useless.
// family is the socket's: an IPv4 dst on an IPv6 socket goes v4-mapped.
func sendTo(fd uintptr, family int, pkt []byte, dst netip.AddrPort, sa *sockaddr) syscall.Errno {
	salen := encodeSockaddr(sa, family, dst)
	if salen == 0 {
		return syscall.EAFNOSUPPORT
	}
	for {
		_, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(pkt))), uintptr(len(pkt)), 0,
			uintptr(unsafe.Pointer(sa)), salen)
		if errno != syscall.EINTR {
			return errno
		}
	}
}

// decodeSockaddr reads the source address recvfrom wrote; the zero
// AddrPort for a family that is neither IPv4 nor IPv6.
func decodeSockaddr(sa *sockaddr) netip.AddrPort {
	port := func(p *uint16) uint16 { b := (*[2]byte)(unsafe.Pointer(p)); return uint16(b[0])<<8 | uint16(b[1]) }
	switch sa.Family {
	case syscall.AF_INET:
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(&sa4.Port))
	case syscall.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port(&sa.Port))
	}
	return netip.AddrPort{}
}

// encodeSockaddr writes dst for a socket of family into sa and returns its
// length, 0 when dst cannot be reached from such a socket.
func encodeSockaddr(sa *sockaddr, family int, dst netip.AddrPort) uintptr {
	a, p := dst.Addr(), dst.Port()
	switch {
	case family == syscall.AF_INET && a.Is4():
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: a.As4()}
		b := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		b[0], b[1] = byte(p>>8), byte(p)
		return unsafe.Sizeof(*sa4)
	case family == syscall.AF_INET6 && a.IsValid():
		*sa = syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Addr: a.As16()}
		b := (*[2]byte)(unsafe.Pointer(&sa.Port))
		b[0], b[1] = byte(p>>8), byte(p)
		return unsafe.Sizeof(*sa)
	}
	return 0
}
