package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/rs/zerolog"
)

const (
	rtpPtime   = 20 * time.Millisecond // one PCMU packet every ptime
	rtpSamples = 160                   // samples per packet: 20 ms at 8 kHz
	pcmuSilent = 0xFF                  // µ-law code of silence
)

// rtpStream is the media of one call: PCMU silence sent every 20 ms to the
// remote party, and a count of the RTP that arrives on the same socket.
//
// The destination comes from the remote SDP (update) and is overridden by
// symmetric latching: once RTP arrives, it is sent back to where it came
// from, so endpoints behind NAT (and sipedge's relay) get it.
type rtpStream struct {
	conn *net.UDPConn
	log  zerolog.Logger

	sent     atomic.Uint64
	received atomic.Uint64

	mu      sync.Mutex
	remote  netip.AddrPort // from SDP; invalid until known
	held    bool           // SDP forbids sending: hold, inactive, sendonly, no stream
	pt      uint8
	latched netip.AddrPort // source of incoming RTP, invalid until some came
	started bool
	stopped bool

	done chan struct{}
	wg   sync.WaitGroup
}

// newRTPStream prepares media on conn (a socket from net.ListenPacket("udp")).
// Nothing is sent before start.
func newRTPStream(conn net.PacketConn, log zerolog.Logger) (*rtpStream, error) {
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		return nil, fmt.Errorf("media socket %T is not UDP", conn)
	}
	return &rtpStream{conn: uc, log: log, done: make(chan struct{})}, nil
}

// update applies a remote SDP (an offer or an answer). An SDP confnode cannot
// use pauses sending until the next one.
func (s *rtpStream) update(body []byte) {
	if len(body) == 0 {
		return
	}
	dst, pt, held, err := remoteMedia(body)
	if err != nil {
		s.log.Info().Err(err).Msg("rtp paused: remote SDP unusable")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if dst != s.remote {
		s.latched = netip.AddrPort{} // the party moved: learn its source again
	}
	s.remote, s.pt, s.held = dst, pt, held || err != nil
	s.log.Debug().Str("rtp_remote", dst.String()).Bool("rtp_held", s.held).Msg("rtp destination set")
}

// start begins sending and receiving; it does nothing after stop.
func (s *rtpStream) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return
	}
	s.started = true
	s.wg.Add(2)
	go s.sendLoop()
	go s.readLoop()
}

// stop ends both loops and waits for them; the caller closes the socket.
func (s *rtpStream) stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	close(s.done)
	s.mu.Unlock()
	_ = s.conn.SetReadDeadline(time.Unix(1, 0)) // wake the reader
	s.wg.Wait()
}

// target is where the next packet goes; ok is false while sending is paused.
func (s *rtpStream) target() (dst netip.AddrPort, pt uint8, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held {
		return dst, 0, false
	}
	dst = s.remote
	if s.latched.IsValid() {
		dst = s.latched
	}
	return dst, s.pt, dst.IsValid()
}

func (s *rtpStream) sendLoop() {
	defer s.wg.Done()
	pkt := rtp.Packet{
		Header: rtp.Header{
			Version: 2, Marker: true,
			SequenceNumber: uint16(rand.Uint32()), Timestamp: rand.Uint32(), SSRC: rand.Uint32(),
		},
		Payload: bytes.Repeat([]byte{pcmuSilent}, rtpSamples),
	}
	buf := make([]byte, pkt.MarshalSize())
	tick := time.NewTicker(rtpPtime)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		dst, pt, ok := s.target()
		if !ok {
			pkt.Marker = true // a talkspurt starts again on resume
			pkt.Timestamp += rtpSamples
			continue
		}
		pkt.PayloadType = pt
		n, err := pkt.MarshalTo(buf)
		if err == nil {
			_, err = s.conn.WriteToUDPAddrPort(buf[:n], dst)
		}
		switch {
		case err != nil && !failing:
			s.log.Debug().Err(err).Str("rtp_remote", dst.String()).Msg("rtp send failed")
			failing = true
		case err == nil:
			s.sent.Add(1)
			failing = false
		}
		pkt.Marker = false
		pkt.SequenceNumber++
		pkt.Timestamp += rtpSamples
	}
}

func (s *rtpStream) readLoop() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	var h rtp.Header
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (ICMP unreachable reported on the socket):
			// keep listening, without spinning.
			select {
			case <-s.done:
				return
			case <-time.After(rtpPtime):
			}
			continue
		}
		if n < 12 || buf[0]>>6 != 2 || (buf[1] >= 192 && buf[1] <= 223) {
			continue // not RTP, or RTCP multiplexed on the port (RFC 5761)
		}
		if _, err := h.Unmarshal(buf[:n]); err != nil {
			continue
		}
		s.received.Add(1)
		s.latch(from)
	}
}

// latch makes from the destination of what is sent (symmetric RTP).
func (s *rtpStream) latch(from netip.AddrPort) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latched == from {
		return
	}
	s.latched = from
	s.log.Debug().Str("rtp_source", from.String()).Str("rtp_remote", s.remote.String()).Msg("rtp latched")
}

// counts returns the packets sent and received so far.
func (s *rtpStream) counts() (sent, received uint64) {
	if s == nil {
		return 0, 0
	}
	return s.sent.Load(), s.received.Load()
}

// remoteMedia reads where to send RTP from a remote SDP: the address and port
// of the first audio stream confnode can take (the one answerSDP accepts) and
// the payload type the remote uses for PCMU. held is true when the remote
// does not want RTP from us: no usable stream, address 0.0.0.0, or a
// direction of sendonly or inactive (our side recvonly or inactive).
func remoteMedia(body []byte) (dst netip.AddrPort, pt uint8, held bool, err error) {
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(body); err != nil {
		return dst, 0, true, fmt.Errorf("parse remote SDP: %w", err)
	}
	for _, m := range sd.MediaDescriptions {
		if m.MediaName.Media != "audio" || m.MediaName.Port.Value == 0 {
			continue
		}
		f, ok := pcmuPayloadType(&sd, m)
		if !ok {
			continue
		}
		p, _ := strconv.ParseUint(f, 10, 8)
		ci := m.ConnectionInformation
		if ci == nil {
			ci = sd.ConnectionInformation
		}
		if ci == nil || ci.Address == nil {
			return dst, uint8(p), true, errors.New("remote SDP has no c= line")
		}
		ip, err := netip.ParseAddr(ci.Address.Address)
		if err != nil {
			return dst, uint8(p), true, fmt.Errorf("remote SDP address %q: want an IP address", ci.Address.Address)
		}
		port := m.MediaName.Port.Value
		if port < 0 || port > 65535 {
			return dst, uint8(p), true, fmt.Errorf("remote SDP port %d out of range", port)
		}
		dst = netip.AddrPortFrom(ip.Unmap(), uint16(port))
		dir := answerDirection(&sd, m) // our direction, mirrored from theirs
		return dst, uint8(p), ip.IsUnspecified() || dir == "recvonly" || dir == "inactive", nil
	}
	return dst, 0, true, errNoCommonCodec
}
