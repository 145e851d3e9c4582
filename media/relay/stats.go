package relay

import (
	"sync/atomic"
	"time"
)

// Side names one party of a stream.
type Side uint8

const (
	// SideA is the endpoint (the caller's phone, softphone, SBC).
	SideA Side = iota
	// SideB is the media node.
	SideB
)

func (s Side) String() string {
	if s == SideA {
		return "a"
	}
	return "b"
}

// DirStats describes what one side sent into the relay (accepted packets:
// invalid and foreign ones are not counted here).
type DirStats struct {
	Packets     uint64    // RTP packets
	Bytes       uint64    // RTP bytes (whole datagrams)
	Lost        uint64    // sum of forward RTP sequence gaps
	SSRC        uint32    // SSRC of the latest RTP packet
	LastPacket  time.Time // arrival of the latest RTP packet; zero if none
	RTCPPackets uint64
}

// dirStats is DirStats kept in atomics: written by the side's readers,
// read by anyone.
type dirStats struct {
	packets, bytes, lost, rtcp atomic.Uint64
	ssrc                       atomic.Uint32
	last                       atomic.Int64 // unix nanoseconds, 0 = never
}

func (d *dirStats) snapshot() DirStats {
	s := DirStats{
		Packets:     d.packets.Load(),
		Bytes:       d.bytes.Load(),
		Lost:        d.lost.Load(),
		SSRC:        d.ssrc.Load(),
		RTCPPackets: d.rtcp.Load(),
	}
	if ns := d.last.Load(); ns != 0 {
		s.LastPacket = time.Unix(0, ns)
	}
	return s
}

// Sequence tracking follows RFC 3550 A.1: a forward step below maxDropout
// counts the gap as lost; a jump further than that (either way) is taken as
// the sender restarting its sequence once a second packet confirms it, and
// counts nothing; packets up to maxMisorder behind are late and ignored.
const (
	maxDropout  = 3000
	maxMisorder = 100
)

// seqTracker follows one side's RTP sequence numbers. It is owned by the
// side's RTP reader, which one worker drains at a time: no locking.
type seqTracker struct {
	started bool
	ssrc    uint32
	last    uint16 // highest sequence number seen
	bad     bool   // a jump is waiting for confirmation
	badSeq  uint16 // the sequence number that confirms it
}

// update records a packet and returns how many packets its sequence number
// shows were lost since the highest one before it. A new SSRC restarts
// tracking; duplicates and late packets count nothing.
func (t *seqTracker) update(ssrc uint32, seq uint16) uint64 {
	if !t.started || ssrc != t.ssrc {
		*t = seqTracker{started: true, ssrc: ssrc, last: seq}
		return 0
	}
	delta := seq - t.last // modulo 2^16
	switch {
	case delta == 0: // duplicate
		return 0
	case delta < maxDropout:
		t.last, t.bad = seq, false
		return uint64(delta - 1)
	case delta <= 0xffff-maxMisorder+1: // jump: restart if the next packet follows it
		if t.bad && seq == t.badSeq {
			t.last, t.bad = seq, false
		} else {
			t.bad, t.badSeq = true, seq+1
		}
		return 0
	default: // late, reordered
		return 0
	}
}
