//go:build unix && !(linux && (amd64 || arm64))

package relay

import (
	"net/netip"
	"syscall"
)

// recvBatch is 1 where recvmmsg is not wired: the reader reads until
// EAGAIN.
const recvBatch = 1

// batch is the receive side of a scratch: one buffer for recvfrom.
type batch struct {
	from sockaddr
	buf  [maxPacket + 1]byte
	n    int
	src  netip.AddrPort
}

func (b *batch) init() {}

// recv reads one datagram from the non-blocking socket fd.
func (b *batch) recv(fd uintptr) (int, syscall.Errno) {
	n, src, errno := recvFrom(fd, b.buf[:], &b.from)
	if errno != 0 {
		return 0, errno
	}
	b.n, b.src = n, src
	return 1, 0
}

// packet returns the datagram of the last recv and its source.
func (b *batch) packet(int) ([]byte, netip.AddrPort) { return b.buf[:b.n], b.src }
