package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrExhausted is returned by Pool.Allocate when no port pair in the range
// can be bound.
var ErrExhausted = errors.New("relay: port range exhausted")

// Pool hands out RTP/RTCP port pairs from [min, max] on one local IP. Pairs
// start on even ports (RTP) with RTCP on port+1, and are taken round-robin
// so a port just freed is reused as late as possible (stray packets of the
// previous call rarely reach the next one). Ports someone else holds are
// skipped. A Pool is safe for concurrent use.
type Pool struct {
	ip        netip.Addr
	advertise netip.Addr // IPv4 (or, without one, the only) address SDP names
	adv6      netip.Addr // IPv6 address SDP names toward an IPv6 side of a dual-stack pool
	min, max  int
	network   string
	family    int // syscall.AF_INET or AF_INET6, what network binds

	// scratch lends the readers their packet buffer and parsed header for
	// the moment a socket is readable: a call's four idle sockets hold none.
	scratch sync.Pool

	mu    sync.Mutex
	next  int    // slot to try first
	taken []bool // slot i is ports min+2i, min+2i+1

	inUse atomic.Int64
}

// PoolOption configures a Pool.
type PoolOption func(*Pool)

// WithAdvertise sets the address LocalA/LocalB report (and so what goes into
// SDP) when the pool binds a wildcard address or sits behind 1:1 NAT.
//
// On a dual-stack pool (bound to "::") it may be given once per family:
// an IPv4 address for IPv4 sides, an IPv6 one for IPv6 sides.
func WithAdvertise(ip netip.Addr) PoolOption {
	return func(p *Pool) {
		if ip = ip.Unmap(); p.DualStack() && ip.Is6() {
			p.adv6 = ip
			return
		}
		p.advertise = ip
	}
}

// DualStack reports whether the pool's sockets take both IPv4 and IPv6
// (bound to the IPv6 wildcard "::" without IPV6_V6ONLY).
func (p *Pool) DualStack() bool { return p.ip.Is6() && p.ip.IsUnspecified() }

// NewPool returns a pool of the ports in [min, max] on ip. min must be even,
// min < max, and the range within 1024..65535.
func NewPool(ip netip.Addr, min, max int, opts ...PoolOption) (*Pool, error) {
	switch {
	case !ip.IsValid():
		return nil, errors.New("relay: pool: invalid IP")
	case min%2 != 0:
		return nil, fmt.Errorf("relay: pool: min port %d is odd", min)
	case min >= max:
		return nil, fmt.Errorf("relay: pool: min port %d not below max %d", min, max)
	case min < 1024 || max > 65535:
		return nil, fmt.Errorf("relay: pool: range %d-%d outside 1024-65535", min, max)
	}
	ip = ip.Unmap()
	p := &Pool{ip: ip, advertise: ip, min: min, max: max, network: "udp4", family: syscall.AF_INET,
		taken: make([]bool, (max-min+1)/2)}
	if ip.Is6() {
		p.network, p.family = "udp6", syscall.AF_INET6
	}
	if p.DualStack() {
		// "udp" with "::" leaves IPV6_V6ONLY off: IPv4 peers arrive and
		// are sent to as ::ffff:a.b.c.d on the one socket.
		p.network, p.advertise = "udp", netip.Addr{}
	}
	p.scratch.New = func() any { return newScratch() }
	for _, o := range opts {
		o(p)
	}
	switch {
	case p.DualStack() && !p.advertise.IsValid() && p.adv6.IsValid():
		p.advertise = p.adv6
	case p.DualStack() && !p.advertise.IsValid():
		return nil, errors.New("relay: pool: a dual-stack pool needs an address to advertise")
	}
	return p, nil
}

// InUse reports the ports currently bound through the pool.
func (p *Pool) InUse() int { return int(p.inUse.Load()) }

// Size reports how many port pairs the range holds.
func (p *Pool) Size() int { return len(p.taken) }

// PortPair is one allocated RTP port and, unless allocated for rtcp-mux, its
// RTCP companion on port+1.
type PortPair struct {
	pool        *Pool
	slot        int
	rtp, rtcp   *net.UDPConn
	raw         [2]syscall.RawConn // by channel: the readers wait on these
	fd          [2]uintptr         // by channel: what the per-packet sendto uses (valid until Close)
	rtpA, rtcpA netip.AddrPort     // advertised
	once        sync.Once
	err         error
}

// RTP returns the RTP socket.
func (pp *PortPair) RTP() *net.UDPConn { return pp.rtp }

// RTCP returns the RTCP socket, nil for a mux pair.
func (pp *PortPair) RTCP() *net.UDPConn { return pp.rtcp }

// Addrs returns the advertised RTP and RTCP addresses; for a mux pair both
// are the RTP address.
func (pp *PortPair) Addrs() (rtp, rtcp netip.AddrPort) { return pp.rtpA, pp.rtcpA }

// AddrsFor returns the advertised addresses for a side of the family v6
// names: on a dual-stack pool with an address of that family to
// advertise, that address; otherwise Addrs.
func (pp *PortPair) AddrsFor(v6 bool) (rtp, rtcp netip.AddrPort) {
	a := pp.pool.advertise
	if v6 {
		a = pp.pool.adv6
	}
	if !pp.pool.DualStack() || !a.IsValid() || (!v6 && !a.Is4()) {
		return pp.rtpA, pp.rtcpA
	}
	return netip.AddrPortFrom(a, pp.rtpA.Port()), netip.AddrPortFrom(a, pp.rtcpA.Port())
}

// Close closes the sockets and returns the ports to the pool. It is
// idempotent and returns the first close error.
func (pp *PortPair) Close() error {
	pp.once.Do(func() {
		n := int64(1)
		err := pp.rtp.Close()
		if pp.rtcp != nil {
			n++
			err = errors.Join(err, pp.rtcp.Close())
		}
		pp.pool.inUse.Add(-n)
		pp.pool.unreserve(pp.slot)
		if err != nil {
			pp.err = fmt.Errorf("relay: close port %d: %w", pp.rtpA.Port(), err)
		}
	})
	return pp.err
}

// Allocate binds the next free pair: RTP on an even port and, unless mux,
// RTCP on port+1. Pairs whose ports are bound by someone else are skipped;
// when none is left it returns ErrExhausted.
func (p *Pool) Allocate(mux bool) (*PortPair, error) {
	for range p.taken {
		slot, ok := p.reserve()
		if !ok {
			break
		}
		pp, err := p.bind(slot, mux)
		if err == nil {
			return pp, nil
		}
		p.unreserve(slot)
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
	}
	return nil, ErrExhausted
}

func (p *Pool) reserve() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.taken)
	for i := range n {
		s := (p.next + i) % n
		if !p.taken[s] {
			p.taken[s] = true
			p.next = (s + 1) % n
			return s, true
		}
	}
	return 0, false
}

func (p *Pool) unreserve(slot int) {
	p.mu.Lock()
	p.taken[slot] = false
	p.mu.Unlock()
}

func (p *Pool) bind(slot int, mux bool) (*PortPair, error) {
	port := p.min + 2*slot
	rtp, err := p.listen(port)
	if err != nil {
		return nil, err
	}
	pp := &PortPair{pool: p, slot: slot, rtp: rtp,
		rtpA: netip.AddrPortFrom(p.advertise, uint16(port))}
	pp.rtcpA = pp.rtpA
	if pp.raw[chRTP], pp.fd[chRTP], err = rawOf(rtp); err != nil {
		_ = rtp.Close()
		return nil, fmt.Errorf("relay: port %d: %w", port, err)
	}
	if !mux {
		if pp.rtcp, err = p.listen(port + 1); err != nil {
			_ = rtp.Close()
			return nil, err
		}
		if pp.raw[chRTCP], pp.fd[chRTCP], err = rawOf(pp.rtcp); err != nil {
			_ = rtp.Close()
			_ = pp.rtcp.Close()
			return nil, fmt.Errorf("relay: port %d: %w", port+1, err)
		}
		pp.rtcpA = netip.AddrPortFrom(p.advertise, uint16(port+1))
		p.inUse.Add(1)
	}
	p.inUse.Add(1)
	return pp, nil
}

// rawOf returns c's raw connection and its descriptor.
func rawOf(c *net.UDPConn) (syscall.RawConn, uintptr, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	var fd uintptr
	if err := raw.Control(func(f uintptr) { fd = f }); err != nil {
		return nil, 0, err
	}
	return raw, fd, nil
}

func (p *Pool) listen(port int) (*net.UDPConn, error) {
	c, err := net.ListenUDP(p.network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.ip, uint16(port))))
	if err != nil {
		return nil, fmt.Errorf("relay: bind %s port %d: %w", p.ip, port, err)
	}
	return c, nil
}

// stopReads sets the sockets' read deadline in the past: a reader waiting
// on them returns at once (os.ErrDeadlineExceeded), and no read starts
// any more.
func (pp *PortPair) stopReads() {
	past := time.Unix(1, 0)
	_ = pp.rtp.SetReadDeadline(past)
	if pp.rtcp != nil {
		_ = pp.rtcp.SetReadDeadline(past)
	}
}
