//go:build linux && (amd64 || arm64)

package rawtcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Conn is a TCP connection whose Read and Write are raw syscalls inside
// the net package's RawConn.
//
// It deliberately implements neither syscall.Conn nor NetConn(): go-redis
// would then run its pool health check (a MSG_PEEK recvfrom) through the
// runtime's syscall state before every command. Write makes the same
// check instead, raw: a connection the server has closed fails the write
// before anything is sent, so go-redis drops it and retries on a new one,
// as its own check would have made it do.
type Conn struct {
	tcp *net.TCPConn
	rc  syscall.RawConn

	rmu  sync.Mutex // one reader at a time (a pub/sub reads while another goroutine writes)
	rd   readOp
	read func(fd uintptr) bool // rd.do, bound once: no closure per call

	wmu   sync.Mutex
	wr    writeOp
	write func(fd uintptr) bool
}

type readOp struct {
	b     []byte
	n     int
	errno syscall.Errno
}

type writeOp struct {
	b      []byte
	n      int
	errno  syscall.Errno
	peeked bool // the closed-by-peer check ran for this write
	closed bool // it found the peer had closed
}

// Wrap returns c with raw reads and writes, or an error when c's
// descriptor cannot be reached.
func Wrap(c *net.TCPConn) (*Conn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("raw access to %s: %w", c.RemoteAddr(), err)
	}
	rw := &Conn{tcp: c, rc: rc}
	rw.read, rw.write = rw.rd.do, rw.wr.do
	return rw, nil
}

// Dialer returns a go-redis Options.Dialer: TCP as go-redis dials it
// (netDialer), wrapped in Conn.
func Dialer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := netDialer(timeout)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			return c, nil // a unix socket: left as net made it
		}
		rw, err := Wrap(tc)
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		return rw, nil
	}
}

func (o *readOp) do(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(o.b))), uintptr(len(o.b)))
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // nothing yet: the netpoller waits (within the deadline), then calls again
		case 0:
			o.n = int(n)
		}
		o.errno = errno
		return true
	}
}

// do sends all of o.b, waiting for room when the socket's buffer is full.
// Before the first byte it peeks: a read of 0 bytes means the peer closed.
func (o *writeOp) do(fd uintptr) bool {
	if !o.peeked {
		o.peeked = true
		var one [1]byte
		n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(&one[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == 0 && n == 0:
			o.closed = true
			return true
		case errno != 0 && errno != syscall.EAGAIN && errno != syscall.EINTR:
			o.errno = errno
			return true
		}
	}
	for o.n < len(o.b) {
		rest := o.b[o.n:]
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(rest))), uintptr(len(rest)), syscall.MSG_NOSIGNAL, 0, 0)
		switch errno {
		case 0:
			o.n += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // buffer full: wait until writable, as net does
		default:
			o.errno = errno
			return true
		}
	}
	return true
}

// Read reads into b as net.TCPConn.Read does: io.EOF once the peer has
// closed, a timeout error past the read deadline.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rd = readOp{b: b}
	err := c.rc.Read(c.read)
	n, errno := c.rd.n, c.rd.errno
	c.rd.b = nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of b, or fails; see Conn for the check before it.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wr = writeOp{b: b}
	err := c.rc.Write(c.write)
	n, errno, closed := c.wr.n, c.wr.errno, c.wr.closed
	c.wr.b = nil
	switch {
	case closed:
		return 0, c.opError("write", fmt.Errorf("%w: connection closed by the peer before the write", io.EOF))
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// opError shapes err as net's own calls do (net.Error with Timeout), the
// RawConn's "raw-read"/"raw-write" operation renamed to the caller's.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.tcp.LocalAddr(), Addr: c.tcp.RemoteAddr(), Err: err}
}

func (c *Conn) Close() error                       { return c.tcp.Close() }
func (c *Conn) LocalAddr() net.Addr                { return c.tcp.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.tcp.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.tcp.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.tcp.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.tcp.SetWriteDeadline(t) }

var _ net.Conn = (*Conn)(nil)
