//go:build linux && (amd64 || arm64)

package proxy

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	rawaddr "github.com/sipedge/sipedge/internal/sockaddr"
)

// rawUDP does the SIP listener's per-message recvfrom and sendto with
// syscall.RawSyscall6, inside the net package's RawConn (so the descriptor
// is referenced while in use and waiting for readiness stays in the
// netpoller). The plain net calls enter the runtime's syscall state, and
// the first one after the process has been idle wakes sysmon from its
// deep sleep: a futex wake and a thread switch. Below the top call rate the
// process is idle between most messages, so that happened for nearly every
// message: at 250 calls/s sysmon switched about 20 times per call and user
// CPU per call was twice that at 1000/s. The relay found the same
// (media/relay/rawio_linux.go). The socket is non-blocking (the net
// package made it), so neither call waits in the kernel.
type rawUDP struct {
	rc     syscall.RawConn
	family int // the socket's: an IPv4 destination on an IPv6 socket goes v4-mapped
	local  net.Addr

	rmu  sync.Mutex // one reader per listener (sipgo's loop); guarded anyway
	rd   rawRead
	read func(fd uintptr) bool // rd.do, bound once
	srcs srcCache              // under rmu

	writers sync.Pool // of *rawWrite: one bound function per concurrent writer
}

type rawRead struct {
	buf   []byte
	n     int
	errno syscall.Errno
	sa    syscall.RawSockaddrInet6
}

type rawWrite struct {
	b     []byte
	sa    syscall.RawSockaddrInet6
	salen uintptr
	errno syscall.Errno
	do    func(fd uintptr) bool
}

// newRawUDP returns nil when pc is not a UDP socket it can drive; the
// caller then uses pc's own calls.
func newRawUDP(pc net.PacketConn) *rawUDP {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	family := 0
	if cerr := rc.Control(func(fd uintptr) {
		family, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_DOMAIN)
	}); cerr != nil || err != nil || (family != syscall.AF_INET && family != syscall.AF_INET6) {
		return nil
	}
	r := &rawUDP{rc: rc, family: family, local: uc.LocalAddr()}
	r.read = r.rd.do
	r.writers.New = func() any {
		w := &rawWrite{}
		w.do = w.send
		return w
	}
	return r
}

func (rd *rawRead) do(fd uintptr) bool {
	for {
		salen := uint32(unsafe.Sizeof(rd.sa))
		n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(rd.buf))), uintptr(len(rd.buf)), 0,
			uintptr(unsafe.Pointer(&rd.sa)), uintptr(unsafe.Pointer(&salen)))
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // nothing queued: the netpoller waits, then calls again
		}
		rd.n, rd.errno = int(n), errno
		return true
	}
}

func (w *rawWrite) send(fd uintptr) bool {
	for {
		_, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(w.b))), uintptr(len(w.b)), 0,
			uintptr(unsafe.Pointer(&w.sa)), w.salen)
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // send buffer full: wait until writable, as net does
		}
		w.errno = errno
		return true
	}
}

// readFrom reads one datagram into b, as net.UDPConn.ReadFrom does.
func (r *rawUDP) readFrom(b []byte) (int, net.Addr, error) {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	r.rd.buf, r.rd.n, r.rd.errno = b, 0, 0
	err := r.rc.Read(r.read)
	r.rd.buf = nil
	if err != nil {
		return 0, nil, &net.OpError{Op: "read", Net: "udp", Source: r.local, Err: err}
	}
	if r.rd.errno != 0 {
		return 0, nil, &net.OpError{Op: "read", Net: "udp", Source: r.local, Err: os.NewSyscallError("recvfrom", r.rd.errno)}
	}
	return r.rd.n, r.srcs.lookup(&r.rd.sa), nil
}

// srcCache maps the sources datagrams came from to their srcAddr
// (srcaddr.go), direct-mapped: a source whose slot another holds gets a
// new srcAddr, which takes the slot. Callers and nodes send many messages
// each, so nearly every datagram finds its source; the table never grows.
type srcCache struct {
	slot [srcSlots]srcEntry
}

const srcSlots = 256 // a power of two

type srcKey struct {
	addr  [16]byte
	scope uint32
	port  uint16
	fam   uint16
}

type srcEntry struct {
	key srcKey
	a   *srcAddr
}

// lookup is the source recvfrom wrote, shaped as the net package shapes
// it (a 4-byte IP from an IPv4 socket, 16 bytes and the zone's name from
// an IPv6 one).
func (c *srcCache) lookup(sa *syscall.RawSockaddrInet6) net.Addr {
	var k srcKey
	k.fam = sa.Family
	switch sa.Family {
	case syscall.AF_INET:
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		copy(k.addr[:4], sa4.Addr[:])
		k.port = rawaddr.Port(&sa4.Port)
	case syscall.AF_INET6:
		k.addr, k.scope, k.port = sa.Addr, sa.Scope_id, rawaddr.Port(&sa.Port)
	default:
		return &net.UDPAddr{}
	}
	h := uint32(2166136261)
	for _, b := range k.addr {
		h = (h ^ uint32(b)) * 16777619
	}
	h = (h ^ uint32(k.port)) * 16777619
	h = (h ^ k.scope) * 16777619
	e := &c.slot[(h^h>>16)&(srcSlots-1)]
	if e.a != nil && e.key == k {
		return e.a
	}
	ip, zone := k.addr[:4], ""
	if k.fam == syscall.AF_INET6 {
		ip = k.addr[:]
		if k.scope != 0 {
			if ifi, err := net.InterfaceByIndex(int(k.scope)); err == nil {
				zone = ifi.Name
			}
		}
	}
	e.key, e.a = k, newSrcAddr(ip, int(k.port), zone)
	return e.a
}

// writeTo sends b to to; false when to cannot be written from this
// socket's family, or r is nil (the caller then uses the net package).
func (r *rawUDP) writeTo(b []byte, to netip.AddrPort) (bool, error) {
	if r == nil {
		return false, nil
	}
	w := r.writers.Get().(*rawWrite)
	defer r.writers.Put(w)
	w.salen = rawaddr.Encode(&w.sa, r.family, to)
	if w.salen == 0 {
		return false, nil
	}
	w.b, w.errno = b, 0
	err := r.rc.Write(w.do)
	w.b = nil
	if err == nil && w.errno != 0 {
		err = os.NewSyscallError("sendto", w.errno)
	}
	if err != nil {
		return true, &net.OpError{Op: "write", Net: "udp", Source: r.local, Addr: net.UDPAddrFromAddrPort(to), Err: err}
	}
	return true, nil
}
