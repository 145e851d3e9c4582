package proxy

import "time"

// DefaultWSFrameTimeout bounds how long a WebSocket frame, and a SIP
// message over WebSocket (one frame, or a fragmented message's frames),
// may take to arrive once its first byte is read (ws_frame_timeout).
const DefaultWSFrameTimeout = 5 * time.Second

// tcpClosedFrameTimeout: a WS or WSS client sent part of a frame or
// message and not the rest within ws_frame_timeout.
const tcpClosedFrameTimeout = "frame_timeout"

// wsFrames follows the frames a WebSocket client sends (RFC 6455 §5.2)
// to know whether a frame, or a message fragmented over several frames,
// is partly received. It reads only the frame headers; sipgo's WebSocket
// code above it parses and unmasks the frames themselves.
type wsFrames struct {
	hdr        [14]byte // the header of the frame being received
	nhdr       int      // bytes of it received; 0 between frames
	left       uint64   // payload bytes of the current frame still to come
	inPayload  bool
	fragmented bool // a data message's frame without FIN: its next frame is due
}

// partial: a frame, or a fragmented message, has begun and not ended.
func (f *wsFrames) partial() bool { return f.nhdr > 0 || f.inPayload || f.fragmented }

// feed follows p, the next bytes of the stream. between reports whether
// the stream was, at some point within p, between messages (a frame or
// message ended in p): a part still missing after p then began in p.
func (f *wsFrames) feed(p []byte) (between bool) {
	for len(p) > 0 {
		if f.inPayload {
			k := uint64(len(p))
			if k > f.left {
				k = f.left
			}
			f.left -= k
			p = p[k:]
			if f.left == 0 {
				f.inPayload = false
				between = between || !f.fragmented
			}
			continue
		}
		if f.nhdr == 0 && len(p) >= 2 && len(p) >= headerLen(p[1]) {
			p = p[copy(f.hdr[:], p[:headerLen(p[1])]):] // the whole header at once
		} else {
			f.hdr[f.nhdr] = p[0]
			f.nhdr++
			p = p[1:]
			if f.nhdr < 2 || f.nhdr < headerLen(f.hdr[1]) {
				continue
			}
		}
		f.startPayload()
		if !f.inPayload {
			between = between || !f.fragmented
		}
	}
	return between
}

// headerLen is the length of a frame header whose second byte is b1.
func headerLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 { // masked (every client frame)
		n += 4
	}
	return n
}

// startPayload reads the whole header in hdr: the payload length and
// whether a data message continues past this frame.
func (f *wsFrames) startPayload() {
	var size uint64
	switch l := f.hdr[1] & 0x7f; l {
	case 126:
		size = uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
	case 127:
		for _, b := range f.hdr[2:10] {
			size = size<<8 | uint64(b)
		}
	default:
		size = uint64(l)
	}
	fin, opcode := f.hdr[0]&0x80 != 0, f.hdr[0]&0x0f
	if opcode < 8 { // a data frame (control frames may come between fragments)
		f.fragmented = !fin
	}
	f.nhdr = 0
	f.left = size
	f.inPayload = size > 0
}

// noteFrames follows bytes read after the upgrade: partialSince is when
// the frame or message still incomplete began (zero: none is).
func (c *guardConn) noteFrames(p []byte, now time.Time) {
	if len(p) == 0 {
		return
	}
	was := c.frames.partial()
	between := c.frames.feed(p)
	switch {
	case !c.frames.partial():
		c.partialSince = time.Time{}
	case !was || between:
		c.partialSince = now
	}
}
