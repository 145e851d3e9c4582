//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// peerClosed reports whether the peer of c has closed its side: a
// non-blocking peek finds end of stream, consuming nothing. It runs through
// Control, not Read, so it never waits for sipgo's reader, which may sit in
// a Read of the same socket.
func peerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = n == 0 && err == nil
	})
	return closed
}
