//go:build linux && (amd64 || arm64)

package relay

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	rawaddr "github.com/sipedge/sipedge/internal/sockaddr"
)

// bindFD and closeFD make the bind(2) and close(2) of every relay socket
// (4 per anchored call: 3000 of each a second at 750 calls/s) without the
// runtime's syscall state. Through unix.Bind and unix.Close they were the
// last syscalls of the anchored call path that entered it, and each woke
// sysmon from its sleep and restarted its 20 µs polling: a futex wake and
// thread switches on the proxy's one core. Neither call blocks on a new or
// finished UDP socket, which only the relay's own epoll watches (never the
// runtime's netpoller).
func (p *Pool) bindFD(fd, port int) error {
	var sa rawaddr.Raw
	n := rawaddr.Encode(&sa, p.family, netip.AddrPortFrom(p.ip, uint16(port)))
	if n == 0 { // an address with a zone: the sockaddr needs the interface index
		return unix.Bind(fd, p.sockaddr(port))
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa)), n); errno != 0 {
		return errno
	}
	return nil
}

func closeFD(fd int) error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0); errno != 0 {
		return errno
	}
	return nil
}
