package relay

import (
	"errors"
	"net"
	"net/netip"

	"github.com/pion/rtp"
)

// reader owns one socket: it reads, checks, counts and forwards packets
// with one buffer and one RTP header reused for every packet.
type reader struct {
	s       *Stream
	in, out *leg
	ch      channel
	conn    *net.UDPConn
	buf     []byte
	hdr     rtp.Header
	seq     seqTracker
}

func newReader(s *Stream, in, out *leg, ch channel) *reader {
	r := &reader{s: s, in: in, out: out, ch: ch, conn: in.ports.RTP(), buf: make([]byte, maxPacket+1)}
	if ch == chRTCP {
		r.conn = in.ports.RTCP()
	}
	// Room for the most CSRCs and a typical number of header extensions;
	// Unmarshal reuses both, so they grow at most once.
	r.hdr.CSRC = make([]uint32, 0, 15)
	r.hdr.Extensions = make([]rtp.Extension, 0, 16)
	return r
}

func (r *reader) run() {
	defer r.s.wg.Done()
	for {
		n, src, err := r.conn.ReadFromUDPAddrPort(r.buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.s.log.Debug().Err(err).Stringer("side", r.in.side).Msg("relay read")
			continue
		}
		if n > maxPacket {
			r.drop(dropInvalid)
			continue
		}
		r.handle(r.buf[:n], src)
	}
}

func (r *reader) drop(why dropReason) { r.s.m.drop[why].Inc() }

// handle is the per-packet path; it allocates nothing once the side has
// latched (an RTP packet whose two-byte header extensions overrun makes
// pion build an error value, and is dropped).
func (r *reader) handle(pkt []byte, src netip.AddrPort) {
	src = unmap(src)
	p := r.in.peer.Load()
	rtcp := r.ch == chRTCP || (p.mux && isMuxedRTCP(pkt))
	if rtcp && !validRTCP(pkt) || !rtcp && !r.parseRTP(pkt) {
		r.drop(dropInvalid)
		return
	}
	if !r.accept(p, src) {
		r.drop(dropForeign)
		return
	}

	from := r.in.side
	st := &r.in.stats
	if rtcp {
		st.rtcp.Add(1)
	} else {
		st.packets.Add(1)
		st.bytes.Add(uint64(len(pkt)))
		if lost := r.seq.update(r.hdr.SSRC, r.hdr.SequenceNumber); lost > 0 {
			st.lost.Add(lost)
		}
		st.ssrc.Store(r.hdr.SSRC)
		st.last.Store(r.s.clock().UnixNano())
	}

	op := r.out.peer.Load()
	conn, dch := r.out.ports.RTP(), chRTP
	if rtcp && !op.mux {
		conn, dch = r.out.ports.RTCP(), chRTCP
	}
	dst, ok := op.dest(dch)
	if !ok {
		r.drop(dropNoPeer)
		return
	}
	if _, err := conn.WriteToUDPAddrPort(pkt, dst); err != nil {
		if !r.s.closing.Load() { // the call ending mid-packet is not a fault
			r.drop(dropSendError)
		}
		return
	}
	if rtcp {
		r.s.m.rtcp[from].Inc()
	} else {
		r.s.m.rtp[from].Inc()
	}
	r.s.m.octets[from].Add(float64(len(pkt)))
}

// accept applies the source check: the first packet after an announcement
// latches whatever its source; after that only the latched source and the
// announced address are accepted.
func (r *reader) accept(p *peer, src netip.AddrPort) bool {
	latch := &p.latched[r.ch]
	l := latch.Load()
	if l == nil {
		a := new(netip.AddrPort)
		*a = src
		if latch.CompareAndSwap(nil, a) {
			r.s.log.Debug().Stringer("side", r.in.side).Stringer("addr", a).
				Bool("rtcp_socket", r.ch == chRTCP).Bool("as_announced", src == p.announced(r.ch)).Msg("relay latched")
			return true
		}
		l = latch.Load()
	}
	if *l == src || src == p.announced(r.ch) {
		return true
	}
	if p.warned.CompareAndSwap(false, true) {
		r.s.log.Warn().Stringer("side", r.in.side).Stringer("from", src).Stringer("latched", l).
			Msg("relay dropping media from a foreign source")
	}
	return false
}

// parseRTP checks the lengths pion would reject first (its errors allocate),
// then parses the header into the reused r.hdr.
func (r *reader) parseRTP(pkt []byte) bool {
	if len(pkt) < 12 || pkt[0]>>6 != 2 {
		return false
	}
	n := 12 + 4*int(pkt[0]&0x0f)
	if pkt[0]&0x10 != 0 {
		if len(pkt) < n+4 {
			return false
		}
		n += 4 + 4*(int(pkt[n+2])<<8|int(pkt[n+3]))
	}
	if len(pkt) < n {
		return false
	}
	_, err := r.hdr.Unmarshal(pkt)
	return err == nil
}

// isMuxedRTCP tells RTCP from RTP on a rtcp-mux port (RFC 5761 §4: RTCP
// packet types 192..223 land in RTP payload types 64..95).
func isMuxedRTCP(pkt []byte) bool {
	if len(pkt) < 2 {
		return false
	}
	pt := pkt[1] & 0x7f
	return pt >= 64 && pt <= 95
}

// validRTCP is the minimal check before relaying RTCP: version 2 and at
// least a header plus SSRC.
func validRTCP(pkt []byte) bool { return len(pkt) >= 8 && pkt[0]>>6 == 2 }
