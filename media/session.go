package media

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sipedge/sipedge/media/policy"
	"github.com/sipedge/sipedge/media/relay"
	"github.com/sipedge/sipedge/media/sdpx"
)

// session is one call anchored here: the relay streams of its m-lines and,
// once answered, the participant it is.
type session struct {
	callID string
	ctx    context.Context // ends when the call ends; streams close with it
	cancel context.CancelFunc

	mu               sync.Mutex
	closed           bool // the call ended: nothing is written any more
	confID           string
	endpointIsCaller bool // false for calls a media node places (adp, admin)
	streams          []*relay.Stream
	v6               [2]family // what each side (relay.SideA, SideB) speaks: from its SDP, else the proxy's hint
	hasMedia         bool      // the endpoint announced audio or video
	joined           bool
	joinedAt         time.Time
	part             participant
	present          bool
}

// participant is what a session is in its conference.
type participant struct {
	AOR       string
	Role      policy.Role
	Kind      policy.Kind
	KeepAlive policy.KeepAlive
}

// rewrite anchors one SDP body the caller (fromCaller) or the callee sent:
// the sender's streams get relay ports, the sender's addresses become the
// relay's peers on its side, and the body returned points the other side at
// the relay.
func (s *session) rewrite(pool *relay.Pool, cfg relay.Config, fromCaller bool, body []byte) ([]byte, error) {
	streams, err := sdpx.Inspect(body)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	side := relay.SideB
	if fromCaller == s.endpointIsCaller {
		side = relay.SideA
		if sdpx.HasMedia(streams) {
			s.hasMedia = true
		}
	}
	if f := familyOf(streams); f != unknown {
		s.v6[side] = f // what the sender announced is what it speaks
	}
	to := relay.SideA // the body goes to the other side
	if side == relay.SideA {
		to = relay.SideB
	}
	relays := make([]sdpx.Relay, len(streams))
	for i, st := range streams {
		if st.Disabled {
			continue
		}
		rs, err := s.stream(pool, cfg, i)
		if err != nil {
			return nil, err
		}
		rs.SetPeer(side, st.Addr, st.RTCP, st.RTCPMux)
		rtp, rtcp := rs.Local(to, s.speaksV6(to, side))
		if st.RTCPMux {
			rtcp = rtp
		}
		relays[i] = sdpx.Relay{RTP: rtp, RTCP: rtcp}
	}
	return sdpx.Rewrite(body, relays)
}

// family is the address family a side of a call speaks.
type family uint8

const (
	unknown family = iota
	ipv4
	ipv6
)

// speaksV6 reports whether side to speaks IPv6: what its SDP or the
// proxy's hint said, else the family of the sender (side from).
func (s *session) speaksV6(to, from relay.Side) bool {
	if s.v6[to] != unknown {
		return s.v6[to] == ipv6
	}
	return s.v6[from] == ipv6
}

// familyOf is the family of the first enabled stream's address.
func familyOf(streams []sdpx.Stream) family {
	for _, st := range streams {
		switch a := st.Addr.Addr(); {
		case st.Disabled || !a.IsValid() || a.IsUnspecified():
		case a.Unmap().Is4():
			return ipv4
		default:
			return ipv6
		}
	}
	return unknown
}

// stream returns the relay stream of m-line i, opening it on first use;
// later offers and answers (re-INVITE, UPDATE) reuse its ports.
func (s *session) stream(pool *relay.Pool, cfg relay.Config, i int) (*relay.Stream, error) {
	for len(s.streams) <= i {
		s.streams = append(s.streams, nil)
	}
	if s.streams[i] != nil {
		return s.streams[i], nil
	}
	rs, err := relay.NewStream(s.ctx, pool, cfg, s.callID, i)
	if err != nil {
		return nil, fmt.Errorf("anchor call %s stream %d: %w", s.callID, i, err)
	}
	s.streams[i] = rs
	return rs, nil
}

// endpointStats sums what the endpoint sent over all streams.
func (s *session) endpointStats() relay.DirStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum relay.DirStats
	for _, rs := range s.streams {
		if rs == nil {
			continue
		}
		st := rs.Stats(relay.SideA)
		sum.Packets += st.Packets
		sum.Bytes += st.Bytes
		sum.Lost += st.Lost
		sum.RTCPPackets += st.RTCPPackets
		if st.LastPacket.After(sum.LastPacket) {
			sum.LastPacket = st.LastPacket
			sum.SSRC = st.SSRC
		}
	}
	return sum
}

// portsPerStream is what relay.NewStream binds: an RTP and an RTCP port
// on each of its two legs.
const portsPerStream = 4

// ports is the number of relay ports the session holds.
func (s *session) ports() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, rs := range s.streams {
		if rs != nil {
			n += portsPerStream
		}
	}
	return n
}

// close frees the relay ports.
func (s *session) close() {
	s.cancel()
	s.mu.Lock()
	s.closed = true
	streams := s.streams
	s.streams = nil
	s.mu.Unlock()
	for _, rs := range streams {
		if rs != nil {
			_ = rs.Close()
		}
	}
}

// silentSince is when the endpoint last showed life: its latest packet, or
// the moment it joined when that is later.
func silentSince(joined time.Time, st relay.DirStats) time.Time {
	if st.LastPacket.After(joined) {
		return st.LastPacket
	}
	return joined
}
