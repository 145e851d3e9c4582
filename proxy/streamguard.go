package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The TCP limits (tcplimits.go) on the TLS, WS and WSS listeners too, put
// below the handshakes so that a client that connects and sends nothing,
// or trickles its handshake, is cut like a TCP slowloris:
//
//   - TLS: the SIP framing and limits of a TCP connection run on the
//     decrypted stream (limitListener over the TLS listener); the TLS
//     handshake must end within tcp_header_timeout of the accept.
//   - WS and WSS: sipgo frames WebSocket itself, so a guard sits under it
//     (over TLS for WSS): the handshake (TLS, then the HTTP upgrade request
//     up to its blank line) must end within tcp_header_timeout, and a
//     connection with no byte either way for tcp_idle_timeout is closed.
//
// Every stream connection counts toward tcp_max_conns_per_source, whichever
// listener took it.

// sourceConns counts open stream connections per source IP.
type sourceConns struct {
	max   int // 0 or less: no limit
	mu    sync.Mutex
	perIP map[string]int
}

func newSourceConns(max int) *sourceConns {
	return &sourceConns{max: max, perIP: make(map[string]int)}
}

// take counts a new connection of ip, unless ip holds max already.
func (s *sourceConns) take(ip string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.max > 0 && s.perIP[ip] >= s.max {
		return false
	}
	s.perIP[ip]++
	return true
}

func (s *sourceConns) release(ip string) {
	s.mu.Lock()
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
	s.mu.Unlock()
}

// handshakeBound is how long a handshake may take: the header timeout,
// else the idle timeout, else no bound.
func (lim tcpLimits) handshakeBound() time.Duration {
	if lim.headerTimeout > 0 {
		return lim.headerTimeout
	}
	return lim.idleTimeout
}

// tlsHandshake runs the handshake of a TLS connection on sipgo's reader
// goroutine (never the accept loop), bounded from the accept.
func (c *limitConn) tlsHandshake() error {
	tc, ok := c.Conn.(*tls.Conn)
	if !ok {
		return nil
	}
	ctx := context.Background()
	if d := c.l.lim.handshakeBound(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, time.Unix(0, c.lastIO.Load()).Add(d))
		defer cancel()
	}
	err := tc.HandshakeContext(ctx)
	if err == nil {
		c.touch()
		return nil
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		c.setReason(tcpClosedHeaderTimeout)
	} else {
		c.setReason(tcpClosedOther)
	}
	c.l.p.log.Debug().Err(err).Str("source", c.ip).Msg("TLS handshake failed: connection closed")
	return io.EOF
}

// wireSecure puts the limits on the TLS, WS and WSS listeners.
func (p *Proxy) wireSecure(lim tcpLimits) {
	for i := range p.secure {
		s := &p.secure[i]
		if s.tp == "tls" {
			l := newLimitListener(s.l, p, lim)
			l.tls = true
			s.l = l
		} else {
			s.l = newGuardListener(s.l, p, lim)
		}
	}
}

// guardListener hands sipgo's WebSocket transport connections that
// enforce the handshake bound, the idle timeout and the per-source cap.
type guardListener struct {
	net.Listener
	p   *Proxy
	lim tcpLimits
	src *sourceConns
}

func newGuardListener(l net.Listener, p *Proxy, lim tcpLimits) *guardListener {
	src := lim.src
	if src == nil {
		src = newSourceConns(lim.maxPerSource)
	}
	return &guardListener{Listener: l, p: p, lim: lim, src: src}
}

// Accept never returns an error for a refused connection (it would stop
// sipgo's accept loop).
func (l *guardListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		if !l.src.take(ip) {
			c.Close()
			l.p.metrics.tcpClosed.WithLabelValues(tcpClosedPerSource).Inc()
			l.p.log.Debug().Str("source", ip).Int("tcp_max_conns_per_source", l.lim.maxPerSource).
				Msg("WebSocket connection refused: per-source limit")
			continue
		}
		l.p.metrics.tcpOpen.Inc()
		g := &guardConn{Conn: c, l: l, ip: ip, accepted: time.Now()}
		g.touch()
		return g, nil
	}
}

// guardConn is one WS or WSS connection under sipgo's WebSocket framing.
type guardConn struct {
	net.Conn
	l        *guardListener
	ip       string
	accepted time.Time

	// reader state (one reader at a time: sipgo's upgrade, then its reader)
	upgraded bool    // the HTTP upgrade request has been read whole
	tail     [3]byte // the last bytes read before the upgrade ended
	ntail    int
	// after the upgrade: the client's frames (wsframe.go) and since when
	// one is partly received (zero: none), for ws_frame_timeout
	frames       wsFrames
	partialSince time.Time

	lastIO    atomic.Int64
	reason    atomic.Pointer[string]
	closeOnce sync.Once
}

func (c *guardConn) touch() { c.lastIO.Store(time.Now().UnixNano()) }

func (c *guardConn) Read(b []byte) (int, error) {
	lim := c.l.lim
	for {
		var deadline time.Time
		if lim.idleTimeout > 0 {
			deadline = time.Unix(0, c.lastIO.Load()).Add(lim.idleTimeout)
		}
		hs := !c.upgraded && lim.headerTimeout > 0
		if hd := c.accepted.Add(lim.headerTimeout); hs && (deadline.IsZero() || hd.Before(deadline)) {
			deadline = hd
		}
		fr := c.upgraded && lim.frameTimeout > 0 && !c.partialSince.IsZero()
		if fd := c.partialSince.Add(lim.frameTimeout); fr && (deadline.IsZero() || fd.Before(deadline)) {
			deadline = fd
		}
		if c.upgraded || hs || lim.idleTimeout > 0 {
			// Before the upgrade with no header timeout, sipgo's own
			// handshake deadline stays.
			_ = c.Conn.SetReadDeadline(deadline)
		}
		n, err := c.Conn.Read(b)
		if n > 0 {
			now := time.Now()
			c.lastIO.Store(now.UnixNano())
			rest := b[:n]
			if !c.upgraded {
				rest = rest[c.sawHandshake(rest):]
			}
			if c.upgraded && lim.frameTimeout > 0 {
				c.noteFrames(rest, now)
			}
			return n, err
		}
		var ne net.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &ne) && ne.Timeout():
			if fr && !time.Now().Before(c.partialSince.Add(lim.frameTimeout)) {
				c.setReason(tcpClosedFrameTimeout)
				c.l.p.log.Debug().Str("source", c.ip).Dur("ws_frame_timeout", lim.frameTimeout).
					Msg("WebSocket frame not received whole within ws_frame_timeout: connection closed")
				return 0, err
			}
			if hs && !time.Now().Before(c.accepted.Add(lim.headerTimeout)) {
				c.setReason(tcpClosedHeaderTimeout)
				return 0, err
			}
			if lim.idleTimeout > 0 && time.Since(time.Unix(0, c.lastIO.Load())) >= lim.idleTimeout {
				c.setReason(tcpClosedIdle)
				return 0, err
			}
			if !c.upgraded && lim.headerTimeout <= 0 && lim.idleTimeout <= 0 {
				return 0, err // sipgo's handshake deadline
			}
			continue // a write kept the connection busy
		case errors.Is(err, io.EOF):
			c.setReason(tcpClosedPeer)
			return 0, err
		default:
			c.setReason(tcpClosedOther)
			return 0, err
		}
	}
}

// sawHandshake notes the end of the HTTP upgrade request (its blank line),
// which may span reads. It returns how many bytes of p belong to the
// request (all of p while it has not ended); the rest are frames.
func (c *guardConn) sawHandshake(p []byte) int {
	var edge [6]byte
	e := append(append(edge[:0], c.tail[:c.ntail]...), p[:min(len(p), 3)]...)
	if i := bytes.Index(e, crlfcrlf); i >= 0 {
		c.upgraded = true
		return i + len(crlfcrlf) - c.ntail
	}
	if i := bytes.Index(p, crlfcrlf); i >= 0 {
		c.upgraded = true
		return i + len(crlfcrlf)
	}
	var last [6]byte // the last three bytes of tail and p
	l := append(append(last[:0], c.tail[:c.ntail]...), p[max(0, len(p)-3):]...)
	c.ntail = copy(c.tail[:], l[max(0, len(l)-3):])
	return len(p)
}

func (c *guardConn) setReason(r string) { c.reason.CompareAndSwap(nil, &r) }

func (c *guardConn) Write(b []byte) (int, error) {
	c.touch()
	return c.Conn.Write(b)
}

func (c *guardConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		reason := tcpClosedOther
		if r := c.reason.Load(); r != nil {
			reason = *r
		}
		c.l.p.metrics.tcpClosed.WithLabelValues(reason).Inc()
		c.l.src.release(c.ip)
		c.l.p.metrics.tcpOpen.Dec()
		err = c.Conn.Close()
	})
	return err
}
