package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TCP limits (Kamailio: tcp_connection_lifetime, tcp_max_connections,
// tcp_wait_data...). Defaults documented in README and config.
const (
	DefaultTCPHeaderTimeout     = 10 * time.Second
	DefaultTCPIdleTimeout       = 120 * time.Second
	DefaultTCPMaxConnsPerSource = 64

	// tcpLinger bounds how long a connection whose peer closed, or whose
	// stream broke, stays open so the requests read from it still get
	// their answers on it (Timer F: a non-INVITE transaction is over by then).
	tcpLinger = 32 * time.Second
)

// Reasons a TCP connection was closed (label of sipedge_sip_tcp_closed_total).
const (
	tcpClosedIdle          = "idle"
	tcpClosedHeaderTimeout = "header_timeout"
	tcpClosedPeer          = "peer_closed"
	tcpClosedFraming       = "framing"
	tcpClosedTooLarge      = "too_large"
	tcpClosedUnparsable    = "unparsable"
	tcpClosedPerSource     = "per_source_limit"
	tcpClosedOther         = "other"
)

type tcpLimits struct {
	headerTimeout time.Duration // a message must arrive whole within this of its first byte
	idleTimeout   time.Duration // no byte either way for this long closes the connection
	maxPerSource  int           // open connections one source IP may hold
	maxMessage    int           // bytes of one message, start line to end of body
	frameTimeout  time.Duration // WS/WSS: a frame or message must arrive whole within this of its first byte
	// src counts each source's connections across the TCP, TLS, WS and
	// WSS listeners (maxPerSource is for all of them); nil: per listener.
	src *sourceConns
}

// limitListener hands sipgo connections that enforce tcpLimits and frame
// the stream themselves, so that a broken message is answered and the
// ones before it keep their answers.
type limitListener struct {
	net.Listener
	p   *Proxy
	lim tcpLimits

	closing atomic.Bool
	stop    chan struct{} // closed with the listener: lingering connections give up
	src     *sourceConns

	// tls: the listener hands out *tls.Conn; each connection's handshake
	// must end within the header timeout (streamguard.go).
	tls bool
}

func newLimitListener(l net.Listener, p *Proxy, lim tcpLimits) *limitListener {
	src := lim.src
	if src == nil {
		src = newSourceConns(lim.maxPerSource)
	}
	return &limitListener{Listener: l, p: p, lim: lim, src: src, stop: make(chan struct{})}
}

// Accept never returns a refused connection (an error would stop sipgo's
// accept loop): over the per-source limit it closes it and waits for the next.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		if !l.src.take(ip) {
			c.Close()
			l.p.metrics.tcpClosed.WithLabelValues(tcpClosedPerSource).Inc()
			l.p.log.Debug().Str("source", ip).Int("tcp_max_conns_per_source", l.lim.maxPerSource).Msg("TCP connection refused: per-source limit")
			continue
		}
		l.p.metrics.tcpOpen.Inc()
		lc := &limitConn{Conn: c, l: l, ip: ip, notify: make(chan struct{}, 1), done: make(chan struct{})}
		if l.tls {
			lc.handshake = true
		}
		lc.touch()
		return lc, nil
	}
}

func (l *limitListener) Close() error {
	if !l.closing.Swap(true) {
		close(l.stop)
	}
	return l.Listener.Close()
}

func (l *limitListener) release(ip string) {
	l.src.release(ip)
	l.p.metrics.tcpOpen.Dec()
}

// limitConn is one accepted connection. sipgo's reader goroutine is the
// only caller of Read; Write comes from any transaction.
type limitConn struct {
	net.Conn
	l  *limitListener
	ip string

	// reader state (sipgo's reader goroutine only)
	store      []byte
	start, end int
	msgStart   time.Time // first byte of the message being received; zero between messages
	broken     bool      // stream unusable: answer what was read, then close
	handshake  bool      // a TLS handshake is still to be done (streamguard.go)

	mu        sync.Mutex // guards lastFrame and reason: Close may come from another goroutine
	lastFrame []byte     // the message handed out by the last Read
	reason    string     // why the reader stopped

	gone      atomic.Bool  // the peer closed: answers go to the received address
	lastIO    atomic.Int64 // unix nanoseconds of the last byte either way
	requests  atomic.Int64 // requests handed to sipgo that expect an answer
	finals    atomic.Int64 // final responses written back
	notify    chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (c *limitConn) touch() { c.lastIO.Store(time.Now().UnixNano()) }

func (c *limitConn) setLast(b []byte) {
	c.mu.Lock()
	c.lastFrame = b
	c.mu.Unlock()
}

func (c *limitConn) setReason(r string) {
	c.mu.Lock()
	c.reason = r
	c.mu.Unlock()
}

// Read hands sipgo exactly one whole message (or a keep-alive CRLF run)
// per call.
func (c *limitConn) Read(b []byte) (int, error) {
	c.setLast(nil)
	if c.handshake {
		c.handshake = false
		if err := c.tlsHandshake(); err != nil {
			return 0, err
		}
	}
	lim := c.l.lim
	for {
		if c.broken {
			c.linger()
			return 0, io.EOF
		}
		pend := c.store[c.start:c.end]
		n, st, why := frame(pend, lim.maxMessage)
		if st == frameOK && n > len(b) {
			st, why = frameTooLarge, "larger than the read buffer"
		}
		switch st {
		case frameOK, frameKeepalive:
			msg := pend[:n]
			c.start += n
			if c.start == c.end {
				c.msgStart = time.Time{}
			}
			k := n
			if st == frameOK {
				var why string
				if k, why = rawSanity(msg); why != "" {
					c.l.p.refuseRaw(msg, why, c.writeOwn)
					continue
				}
				if expectsAnswer(msg) {
					c.requests.Add(1)
				}
			}
			copy(b, msg[:k])
			c.setLast(msg[:k])
			return k, nil
		case frameBad, frameTooLarge:
			c.refuse(pend, st, why)
			continue
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
}

// fill reads more bytes, enforcing the idle and header deadlines.
func (c *limitConn) fill() error {
	lim := c.l.lim
	if c.end == len(c.store) {
		if c.start > 0 {
			c.end = copy(c.store, c.store[c.start:c.end])
			c.start = 0
		} else {
			grow := 2 * len(c.store)
			if grow < 4096 {
				grow = 4096
			}
			s := make([]byte, grow)
			copy(s, c.store[c.start:c.end])
			c.store = s
		}
	}
	for {
		now := time.Now()
		var deadline time.Time
		if lim.idleTimeout > 0 {
			deadline = time.Unix(0, c.lastIO.Load()).Add(lim.idleTimeout)
		}
		inMsg := !c.msgStart.IsZero()
		if hd := c.msgStart.Add(lim.headerTimeout); inMsg && lim.headerTimeout > 0 && (deadline.IsZero() || hd.Before(deadline)) {
			deadline = hd
		}
		_ = c.Conn.SetReadDeadline(deadline)
		n, err := c.Conn.Read(c.store[c.end:])
		if n > 0 {
			if c.start == c.end {
				c.msgStart = now
			}
			c.end += n
			c.touch()
			return nil
		}
		var ne net.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &ne) && ne.Timeout():
			if inMsg && lim.headerTimeout > 0 && !time.Now().Before(c.msgStart.Add(lim.headerTimeout)) {
				c.setReason(tcpClosedHeaderTimeout)
				return io.EOF
			}
			if lim.idleTimeout <= 0 || time.Since(time.Unix(0, c.lastIO.Load())) < lim.idleTimeout {
				continue // a write kept the connection busy
			}
			c.setReason(tcpClosedIdle)
			return io.EOF
		case errors.Is(err, io.EOF):
			c.setReason(tcpClosedPeer)
			c.gone.Store(true)
			// RFC 3261 §18.2.2: answers to what was read still go over
			// this connection; keep it in sipgo's pool until they are out,
			// so sipgo never opens one to the host a Via names.
			c.linger()
			return io.EOF
		default:
			c.setReason(tcpClosedOther)
			return err
		}
	}
}

// refuse answers the broken message at the head of pend and marks the
// stream broken: nothing after it can be framed.
func (c *limitConn) refuse(pend []byte, st frameStatus, why string) {
	p := c.l.p
	c.broken = true
	c.start = c.end
	send := c.writeOwn
	if st == frameTooLarge {
		c.setReason(tcpClosedTooLarge)
		p.oversized(pend, send)
		return
	}
	c.setReason(tcpClosedFraming)
	p.metrics.malformed.WithLabelValues("framing").Inc()
	id := rawCallID(pend)
	p.log.Debug().Str("call_id", id).Str("reason", why).Msg("TCP stream cannot be framed: answering and closing")
	if out := rawResponse(pend, 400, "Bad Request ("+why+")", p.opts.UserAgent); out != nil {
		if err := send(out); err != nil {
			p.notSent("400", id, 400, err)
		}
	}
}

// linger waits until every request read has its final answer, the peer
// is gone for good or tcpLinger passed.
func (c *limitConn) linger() {
	t := time.NewTimer(tcpLinger)
	defer t.Stop()
	for c.finals.Load() < c.requests.Load() && !c.l.closing.Load() {
		select {
		case <-c.notify:
		case <-t.C:
			return
		case <-c.done:
			return
		case <-c.l.stop:
			return
		}
	}
}

// writeOwn sends an answer sipedge made from raw bytes to a message that
// never reached a transaction: it is not one of the finals linger waits for.
func (c *limitConn) writeOwn(b []byte) error {
	c.touch()
	_, err := c.Conn.Write(b)
	return err
}

func (c *limitConn) Write(b []byte) (int, error) {
	c.touch()
	var n int
	var err error
	if !c.l.tls && bytes.HasPrefix(b, []byte("SIP/")) && !c.gone.Load() && peerClosed(c.Conn) {
		// Closed by the peer, and sipgo's reader has not read the end yet:
		// written here, the answer would be lost (peerclosed_unix.go).
		c.gone.Store(true)
	}
	if c.gone.Load() && !c.l.tls && bytes.HasPrefix(b, []byte("SIP/")) {
		n, err = c.toReceived(b)
	} else {
		n, err = c.Conn.Write(b)
	}
	if isFinalResponse(b) {
		c.finals.Add(1)
		select {
		case c.notify <- struct{}{}:
		default:
		}
	}
	return n, err
}

// Close is called by sipgo when it stops reading. If it stops right after
// a message was handed out whole (no read error), sipgo could not parse
// that message: it is answered here, then the connection lingers for the
// answers to the messages before it.
func (c *limitConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		p := c.l.p
		c.mu.Lock()
		reason, last := c.reason, c.lastFrame
		c.mu.Unlock()
		if reason == "" && last != nil && !c.l.closing.Load() && len(bytes.Trim(last, "\r\n")) > 0 {
			reason = tcpClosedUnparsable
			perr := "unparsable"
			if _, perr2 := sip.NewParser().ParseSIP(last); perr2 != nil {
				perr = perr2.Error()
			}
			p.rejectRaw(last, perr, c.writeOwn)
			if expectsAnswer(last) {
				c.requests.Add(-1) // answered here (or not at all), never by a transaction
			}
			go func() {
				c.linger()
				c.finish(reason)
			}()
			return
		}
		if reason == "" {
			reason = tcpClosedOther
		}
		err = c.finish(reason)
	})
	return err
}

func (c *limitConn) finish(reason string) error {
	close(c.done)
	c.l.p.metrics.tcpClosed.WithLabelValues(reason).Inc()
	c.l.release(c.ip)
	return c.Conn.Close()
}

type frameStatus int

const (
	frameNeedMore frameStatus = iota
	frameOK
	frameKeepalive
	frameBad
	frameTooLarge
)

var crlfcrlf = []byte("\r\n\r\n")

// frame finds the first message in pend by its Content-Length (RFC 3261
// §18.3: mandatory on a stream). It returns its length, or why it cannot
// be framed. Leading CRLFs are keep-alives (RFC 5626 §3.5.1), handed out
// at most four at a time as sipgo expects them.
func frame(pend []byte, max int) (int, frameStatus, string) {
	if len(pend) == 0 {
		return 0, frameNeedMore, ""
	}
	if pend[0] == '\r' || pend[0] == '\n' {
		k := 0
		for k < len(pend) && k < 4 && (pend[k] == '\r' || pend[k] == '\n') {
			k++
		}
		return k, frameKeepalive, ""
	}
	hdrEnd := bytes.Index(pend, crlfcrlf)
	if hdrEnd < 0 {
		if len(pend) > max {
			return 0, frameTooLarge, "header too large"
		}
		return 0, frameNeedMore, ""
	}
	cl := -1
	head := pend[:hdrEnd]
	for len(head) > 0 {
		var line []byte
		if i := bytes.Index(head, []byte("\r\n")); i >= 0 {
			line, head = head[:i], head[i+2:]
		} else {
			line, head = head, nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name := bytes.TrimSpace(line[:colon])
		if !(len(name) == 1 && (name[0] == 'l' || name[0] == 'L')) && !bytes.EqualFold(name, []byte("Content-Length")) {
			continue
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(line[colon+1:])))
		if err != nil || v < 0 {
			return 0, frameBad, "bad Content-Length"
		}
		if cl >= 0 && cl != v {
			return 0, frameBad, "multiple Content-Length"
		}
		cl = v
	}
	if cl < 0 {
		return 0, frameBad, "missing Content-Length"
	}
	total := hdrEnd + len(crlfcrlf) + cl
	if total > max {
		return 0, frameTooLarge, "message too large"
	}
	if len(pend) < total {
		return 0, frameNeedMore, ""
	}
	return total, frameOK, ""
}

// expectsAnswer: a request other than ACK.
func expectsAnswer(msg []byte) bool {
	return !bytes.HasPrefix(msg, []byte("SIP/")) && !bytes.HasPrefix(msg, []byte("ACK "))
}

// isFinalResponse: "SIP/2.0 2xx".."6xx".
func isFinalResponse(b []byte) bool {
	return len(b) > 9 && bytes.HasPrefix(b, []byte("SIP/2.0 ")) && b[8] >= '2' && b[8] <= '6'
}

// toReceived sends a response whose connection is gone over a new one to
// the received address: the source IP of the request and the port of its
// top Via (rport if it has a value), never the host the Via names
// (RFC 3261 §18.2.2, RFC 3581).
func (c *limitConn) toReceived(b []byte) (int, error) {
	addr := net.JoinHostPort(c.ip, strconv.Itoa(topViaPort(b)))
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("connection gone, received address %s: %w", addr, err)
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	c.l.p.log.Info().Str("call_id", rawCallID(b)).Str("to", addr).
		Msg("TCP connection gone: response sent to the received address")
	return conn.Write(b)
}

// topViaPort is the rport value, else the sent-by port, else 5060, of
// the first Via in a message.
func topViaPort(b []byte) int {
	for _, l := range rawLines(b) {
		if headerName(l) != "via" {
			continue
		}
		v := l[strings.IndexByte(l, ':')+1:]
		if i := strings.IndexByte(v, ','); i >= 0 {
			v = v[:i]
		}
		parts := strings.Split(v, ";")
		for _, p := range parts[1:] {
			if k, val, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(k, "rport") {
				if n, err := strconv.Atoi(strings.TrimSpace(val)); err == nil && n > 0 && n < 65536 {
					return n
				}
			}
		}
		f := strings.Fields(parts[0])
		if len(f) == 0 {
			return 5060
		}
		hostport := f[len(f)-1]
		if _, ps, err := net.SplitHostPort(hostport); err == nil {
			if n, err := strconv.Atoi(ps); err == nil && n > 0 && n < 65536 {
				return n
			}
		}
		return 5060
	}
	return 5060
}
