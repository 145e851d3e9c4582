package relay

import (
	"net/netip"
	"syscall"

	"github.com/pion/rtp"
)

// reader is one socket of a stream: when it is readable, its worker
// drains it, and the reader checks, counts and forwards each datagram with
// the worker's buffer and RTP header (an idle socket holds none).
type reader struct {
	s       *Stream
	in, out *leg
	ch      channel
	pool    *Pool
	sc      *scratch // the worker's, while the socket is being drained
	seq     seqTracker
	at      readerAt // where the worker knows it from (worker_*.go)
}

// scratch is what a reader needs only while a packet is in hand.
type scratch struct {
	in  batch
	hdr rtp.Header
	to  sockaddr
}

func newScratch() *scratch {
	sc := new(scratch)
	sc.in.init()
	// Room for the most CSRCs and a typical number of header extensions;
	// Unmarshal reuses both, so they grow at most once.
	sc.hdr.CSRC = make([]uint32, 0, 15)
	sc.hdr.Extensions = make([]rtp.Extension, 0, 16)
	return sc
}

// readBurst bounds the datagrams one turn drains from a socket before its
// worker moves on to the other ready sockets (it comes back for the rest).
const readBurst = 64

func newReader(s *Stream, in, out *leg, ch channel) *reader {
	r := &reader{}
	r.init(s, in, out, ch)
	return r
}

func (r *reader) init(s *Stream, in, out *leg, ch channel) {
	*r = reader{s: s, in: in, out: out, ch: ch, pool: in.ports.pool}
}

// fd is the descriptor of the reader's socket.
func (r *reader) fd() uintptr { return r.in.ports.fd[r.ch] }

// drain reads and handles what is queued on the reader's socket with sc:
// false once the socket is empty (the next datagram is a new readiness
// edge), true after a full burst (call again).
func (r *reader) drain(sc *scratch) bool {
	fd := r.fd()
	r.sc = sc
	more := true
	for range readBurst / recvBatch {
		k, errno := sc.in.recv(fd)
		if errno == syscall.EAGAIN {
			more = false
			break
		}
		if errno != 0 {
			if errno != syscall.EINTR {
				r.s.log.Debug().Err(errno).Stringer("side", r.in.side).Msg("relay read")
			}
			continue
		}
		for i := range k {
			pkt, src := sc.in.packet(i)
			if len(pkt) > maxPacket {
				r.drop(dropInvalid)
				continue
			}
			r.handle(pkt, src)
		}
		if recvBatch > 1 && k < recvBatch {
			more = false // emptied: the next datagram is a new readiness edge
			break
		}
	}
	r.sc = nil
	return more
}

// send sends pkt to dst out of the socket fd (the other side's).
func (r *reader) send(fd uintptr, pkt []byte, dst netip.AddrPort) error {
	if errno := sendTo(fd, r.pool.family, pkt, dst, &r.sc.to); errno != 0 {
		return errno
	}
	return nil
}

func (r *reader) drop(why dropReason) { r.s.m.drop[why].Inc() }

// handle is the per-packet path; it allocates nothing once the side has
// latched (an RTP packet whose two-byte header extensions overrun makes
// pion build an error value, and is dropped).
func (r *reader) handle(pkt []byte, src netip.AddrPort) {
	if r.sc == nil { // a direct call (tests): a scratch of its own
		r.sc = newScratch()
	}
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
		if lost := r.seq.update(r.sc.hdr.SSRC, r.sc.hdr.SequenceNumber); lost > 0 {
			st.lost.Add(lost)
		}
		st.ssrc.Store(r.sc.hdr.SSRC)
		st.last.Store(r.s.clock().UnixNano())
	}

	op := r.out.peer.Load()
	dch := chRTP
	if rtcp && !op.mux {
		dch = chRTCP
	}
	dst, ok := op.dest(dch)
	if !ok {
		r.drop(dropNoPeer)
		return
	}
	if err := r.send(r.out.ports.fd[dch], pkt, dst); err != nil {
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
// then parses the header into the reused r.sc.hdr.
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
	_, err := r.sc.hdr.Unmarshal(pkt)
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
