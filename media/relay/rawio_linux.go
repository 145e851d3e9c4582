//go:build linux && (amd64 || arm64)

package relay

import (
	"net/netip"
	"syscall"
	"unsafe"

	rawaddr "github.com/sipedge/sipedge/internal/sockaddr"
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
type sockaddr = rawaddr.Raw

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
	return int(n), rawaddr.Decode(sa), 0
}

// sendTo sends pkt to dst from the non-blocking socket fd; a socket
// without room (EAGAIN) is an error like any other: late RTP is useless.
// family is the socket's: an IPv4 dst on an IPv6 socket goes v4-mapped.
func sendTo(fd uintptr, family int, pkt []byte, dst netip.AddrPort, sa *sockaddr) syscall.Errno {
	salen := rawaddr.Encode(sa, family, dst)
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
