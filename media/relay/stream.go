// Package relay anchors the RTP and RTCP of calls in sipedge's own UDP ports
// (SPEC §5). A Stream relays one m-line of one call between side A (the
// endpoint) and side B (the media node); it latches onto each side's real
// source address (symmetric RTP, for endpoints behind NAT), honours
// rtcp-mux per side, and counts what each side sends, which is how sipedge
// knows who is really present.
package relay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// maxPacket is the largest datagram relayed; larger ones are dropped as
// invalid (the read buffer is one byte longer to notice them).
const maxPacket = 2048

// Config holds what every stream needs from its owner.
type Config struct {
	// Metrics shared by all streams; nil counts into a private, unexported set.
	Metrics *Metrics
	// Logger for latch events and errors; the zero Logger logs nothing.
	Logger zerolog.Logger
	// Clock stamps packet arrivals; nil means time.Now.
	Clock func() time.Time
}

// Stream relays one m-line of one call: RTP and RTCP arriving on the
// A-facing ports go out of the B-facing ports to B, and the other way round.
// All methods are safe for concurrent use while packets flow.
type Stream struct {
	callID string
	index  int
	log    zerolog.Logger
	m      *Metrics
	clock  func() time.Time
	legs   [2]leg
	nports int

	mu       sync.Mutex // serialises SetPeer, guards stopCtx
	wg       sync.WaitGroup
	stopCtx  func() bool // unregisters the ctx hook; set after it is registered
	closed   sync.Once
	closing  atomic.Bool // set before the sockets close: a send that fails now is no drop
	closeErr error
}

// channel tells which socket of a side a packet arrived on or leaves from.
type channel uint8

const (
	chRTP channel = iota
	chRTCP
)

// leg is one side of a stream: sipedge's ports facing it, where to reach it
// and what it sent.
type leg struct {
	side  Side
	ports *PortPair
	peer  atomic.Pointer[peer]
	stats dirStats
}

// peer is a side's address as last announced in SDP plus the sources
// latched since then. SetPeer replaces the whole value, which resets the
// latches; a latch racing with it lands in the discarded value.
type peer struct {
	rtp, rtcp netip.AddrPort // announced; rtcp == rtp with mux
	mux       bool
	latched   [2]atomic.Pointer[netip.AddrPort] // by channel
	warned    atomic.Bool                       // a foreign source was logged
}

func (p *peer) announced(ch channel) netip.AddrPort {
	if ch == chRTCP {
		return p.rtcp
	}
	return p.rtp
}

// dest is where to send on ch: the latched source, else the announced
// address; ok is false when there is none or the side is on hold.
func (p *peer) dest(ch channel) (netip.AddrPort, bool) {
	if l := p.latched[ch].Load(); l != nil {
		return *l, true
	}
	a := p.announced(ch)
	return a, a.IsValid() && a.Port() != 0 && !a.Addr().IsUnspecified()
}

// NewStream allocates the A-facing and B-facing port pairs from pool and
// starts relaying. The stream closes itself when ctx ends (pass the
// dialog's context), or when Close is called.
func NewStream(ctx context.Context, pool *Pool, cfg Config, callID string, index int) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &Stream{callID: callID, index: index, m: cfg.Metrics, clock: cfg.Clock,
		log: cfg.Logger.With().Str("call_id", callID).Int("stream", index).Logger()}
	if s.m == nil {
		s.m, _ = NewMetrics(nil) // cannot fail without a registry
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	for i := range s.legs {
		l := &s.legs[i]
		l.side = Side(i)
		pp, err := pool.Allocate(false)
		if err != nil {
			if i > 0 {
				_ = s.legs[0].ports.Close()
			}
			return nil, fmt.Errorf("relay: call %s stream %d: allocate %s-facing ports: %w", callID, index, l.side, err)
		}
		l.ports = pp
		l.peer.Store(&peer{})
		s.nports += 2
	}
	s.m.streams.Inc()
	s.m.ports.Add(float64(s.nports))
	a, b := &s.legs[SideA], &s.legs[SideB]
	for _, r := range []*reader{
		newReader(s, a, b, chRTP), newReader(s, a, b, chRTCP),
		newReader(s, b, a, chRTP), newReader(s, b, a, chRTCP),
	} {
		s.wg.Add(1)
		go r.run()
	}
	s.mu.Lock() // the hook may already be running Close
	s.stopCtx = context.AfterFunc(ctx, func() { _ = s.Close() })
	s.mu.Unlock()
	return s, nil
}

// LocalA returns the addresses to put into SDP sent to the endpoint.
func (s *Stream) LocalA() (rtp, rtcp netip.AddrPort) { return s.legs[SideA].ports.Addrs() }

// LocalB returns the addresses to put into SDP sent to the media node.
func (s *Stream) LocalB() (rtp, rtcp netip.AddrPort) { return s.legs[SideB].ports.Addrs() }

// Local returns the addresses to put into SDP sent to side, which speaks
// IPv6 when v6: on a dual-stack pool the address of that family.
func (s *Stream) Local(side Side, v6 bool) (rtp, rtcp netip.AddrPort) {
	return s.legs[side].ports.AddrsFor(v6)
}

// SetPeerA records the endpoint's SDP address; see SetPeer.
func (s *Stream) SetPeerA(rtp, rtcp netip.AddrPort, mux bool) { s.SetPeer(SideA, rtp, rtcp, mux) }

// SetPeerB records the media node's SDP address; see SetPeer.
func (s *Stream) SetPeerB(rtp, rtcp netip.AddrPort, mux bool) { s.SetPeer(SideB, rtp, rtcp, mux) }

// SetPeer records the RTP and RTCP address a side announced in its SDP and
// whether it uses rtcp-mux (then rtcp is ignored; an invalid rtcp without mux
// means RTP port+1). The relay sends there until a packet arrives from that
// side, then to the packet's real source. An address different from the
// previous one resets the side's latch; an unspecified address (0.0.0.0,
// hold) sends nothing to the side until it sends or announces again.
func (s *Stream) SetPeer(side Side, rtp, rtcp netip.AddrPort, mux bool) {
	rtp = unmap(rtp)
	switch {
	case mux:
		rtcp = rtp
	case !rtcp.IsValid() && rtp.IsValid():
		rtcp = netip.AddrPortFrom(rtp.Addr(), rtp.Port()+1)
	default:
		rtcp = unmap(rtcp)
	}
	np := &peer{rtp: rtp, rtcp: rtcp, mux: mux}
	l := &s.legs[side]
	s.mu.Lock()
	defer s.mu.Unlock()
	old := l.peer.Load()
	if old.rtp == rtp && old.rtcp == rtcp {
		for ch := range old.latched {
			np.latched[ch].Store(old.latched[ch].Load())
		}
	}
	l.peer.Store(np)
	s.log.Debug().Stringer("side", side).Stringer("rtp", rtp).Stringer("rtcp", rtcp).Bool("mux", mux).Msg("relay peer set")
}

// Latched returns the sources the relay latched onto for a side since its
// last announcement; zero values when nothing arrived yet.
func (s *Stream) Latched(side Side) (rtp, rtcp netip.AddrPort) {
	p := s.legs[side].peer.Load()
	if l := p.latched[chRTP].Load(); l != nil {
		rtp = *l
	}
	if l := p.latched[chRTCP].Load(); l != nil {
		rtcp = *l
	}
	return rtp, rtcp
}

// Stats returns what a side has sent so far.
func (s *Stream) Stats(side Side) DirStats { return s.legs[side].stats.snapshot() }

// Close stops relaying, closes the sockets and returns the ports to the
// pool. It is idempotent.
func (s *Stream) Close() error {
	s.closed.Do(func() {
		s.closing.Store(true)
		s.mu.Lock()
		stop := s.stopCtx
		s.mu.Unlock()
		if stop != nil {
			stop()
		}
		// Wake the readers out of their wait and let them finish the
		// packet in hand before the sockets close: they send with the
		// other side's raw descriptor, which must not be closed (or
		// reused by a new socket) under them.
		for i := range s.legs {
			s.legs[i].ports.stopReads()
		}
		s.wg.Wait()
		err := errors.Join(s.legs[SideA].ports.Close(), s.legs[SideB].ports.Close())
		s.m.streams.Dec()
		s.m.ports.Sub(float64(s.nports))
		if err != nil {
			s.closeErr = fmt.Errorf("relay: call %s stream %d: %w", s.callID, s.index, err)
		}
	})
	return s.closeErr
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	if !ap.Addr().Is4In6() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
