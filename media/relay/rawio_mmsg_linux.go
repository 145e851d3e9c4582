//go:build linux && (amd64 || arm64)

package relay

import (
	"net/netip"
	"syscall"
	"unsafe"

	rawaddr "github.com/sipedge/sipedge/internal/sockaddr"
)

// recvBatch is the most datagrams one recvmmsg takes. Its real use is the
// count: a call that returns fewer has emptied the socket, so the reader
// parks without the extra recvfrom that would only say EAGAIN (one syscall
// per packet saved when, as with RTP, packets come one at a time).
const recvBatch = 4

// mmsghdr is struct mmsghdr on 64-bit Linux.
type mmsghdr struct {
	hdr syscall.Msghdr
	n   uint32
	_   [4]byte
}

// batch is the receive side of a scratch: the buffers and the headers
// recvmmsg fills, pointing into the same value (set once, in init).
type batch struct {
	msgs [recvBatch]mmsghdr
	iov  [recvBatch]syscall.Iovec
	from [recvBatch]sockaddr
	buf  [recvBatch][maxPacket + 1]byte
}

func (b *batch) init() {
	for i := range b.msgs {
		b.iov[i].Base = &b.buf[i][0]
		b.iov[i].SetLen(len(b.buf[i]))
		b.msgs[i].hdr.Iov = &b.iov[i]
		b.msgs[i].hdr.Iovlen = 1
		b.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&b.from[i]))
	}
}

// recv reads up to recvBatch datagrams from the non-blocking socket fd;
// errno is syscall.EAGAIN when nothing is queued.
func (b *batch) recv(fd uintptr) (int, syscall.Errno) {
	for i := range b.msgs {
		b.msgs[i].hdr.Namelen = uint32(unsafe.Sizeof(b.from[i]))
		b.msgs[i].hdr.Flags = 0
		b.msgs[i].n = 0
	}
	for {
		k, _, errno := syscall.RawSyscall6(syscall.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&b.msgs[0])), recvBatch, syscall.MSG_DONTWAIT, 0, 0)
		if errno != syscall.EINTR {
			return int(k), errno
		}
	}
}

// packet returns datagram i of the last recv (up to maxPacket+1 bytes:
// longer ones come truncated) and its source.
func (b *batch) packet(i int) ([]byte, netip.AddrPort) {
	return b.buf[i][:b.msgs[i].n], rawaddr.Decode(&b.from[i])
}
