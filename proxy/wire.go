package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Message sizes. An IPv4 UDP datagram carries at most 65 507 bytes: that
// is the default ceiling, and sipedge sends such datagrams whole (the IP
// layer fragments them, as Kamailio does).
const (
	MaxUDPPayload      = 65507
	DefaultMaxMessage  = MaxUDPPayload
	readBufferSize     = 65535 // sip.TransportBufferReadSize is a uint16
	sipgoUDPWriteSlack = 200   // sipgo refuses UDP writes above UDPMTUSize-200
)

// Reasons a message was not sent (label of sipedge_sip_messages_not_sent_total).
const (
	notSentTooLarge    = "too_large"   // over max_message_size or the datagram limit
	notSentWriteError  = "write_error" // the socket refused it
	notSentRespTooBig  = "response_too_large"
	notSentNoTransport = "no_transport"
)

// configureSizes sets sipgo's process-wide size knobs, once: sipgo keeps
// them as package variables that its running transports read, and every
// proxy in a process wants the same values (the ceiling; max_message_size
// is enforced by sipedge itself).
func configureSizes() { sizesOnce.Do(setSizes) }

var sizesOnce sync.Once

func setSizes() {
	sip.UDPMTUSize = MaxUDPPayload + sipgoUDPWriteSlack
	sip.TransportBufferReadSize = readBufferSize
	// The proxy ends every client INVITE transaction it relays a 2xx of
	// and matches the node's 2xx retransmissions itself for 64×T1 (the
	// finished table, rememberBranch). sipgo v1.7.3 does not stop Timer M
	// when a transaction is terminated, so for 32 s the timer kept each
	// ended transaction and the structs it points to reachable: half of
	// the heap in use at 2000 calls/s (BENCHMARKS.md, "Timer M"). With a
	// short Timer M they go after T1. A client INVITE transaction the
	// proxy does not end (a late 2xx on an abandoned failover branch, ACKed
	// and BYEd at once) leaves Accepted after T1 as well: a retransmission
	// of that 2xx is then dropped as unmatched and counted.
	sip.Timer_M = sip.T1
}

// notSentReason classifies a write error.
func notSentReason(err error) string {
	switch {
	case errors.Is(err, sip.ErrUDPMTUCongestion), errors.Is(err, syscall.EMSGSIZE):
		return notSentTooLarge
	case strings.Contains(err.Error(), "transport") && strings.Contains(err.Error(), "not supported"):
		return notSentNoTransport
	}
	return notSentWriteError
}

// notSent logs and counts a message that did not leave sipedge.
func (p *Proxy) notSent(what, callID string, code int, err error) {
	reason := notSentReason(err)
	p.metrics.notSent.WithLabelValues(reason).Inc()
	ev := p.log.Warn().Err(err).Str("call_id", callID).Str("message", what).Str("reason", reason)
	if code > 0 {
		ev = ev.Int("code", code)
	}
	ev.Msg("message not sent")
}

// errNoDNS is what every DNS query gets unless dns_lookups is on.
var errNoDNS = errors.New("sipedge: DNS lookups are off (dns_lookups)")

// noDNSResolver fails every query without sending one: names in messages
// (a Via host, a Contact) are never looked up. IP literals need no query.
func noDNSResolver(count *atomic.Int64) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		count.Add(1)
		return nil, errNoDNS
	}}
}

// udpConn wraps the UDP listener sipgo reads. It drops (and counts)
// responses above the size limit, answers requests above it with 513, and
// remembers the datagram being parsed so a parse failure sipgo reports can
// be answered with 400 (sipgo itself only logs it).
type udpConn struct {
	net.PacketConn
	p   *Proxy
	max int
	raw *rawUDP // the per-message syscalls without the runtime's syscall state; nil: PacketConn's (rawudp_linux.go)

	// The datagram being parsed. Set on sipgo's reader goroutine of this
	// listener, which reports a UDP parse failure synchronously; guarded
	// because TCP readers report theirs through the same log bridge.
	mu       sync.Mutex
	last     []byte
	lastAddr net.Addr
}

func (c *udpConn) remember(data []byte, addr net.Addr) {
	c.mu.Lock()
	c.last, c.lastAddr = data, addr
	c.mu.Unlock()
}

func newUDPConn(pc net.PacketConn, p *Proxy, max int) *udpConn {
	return &udpConn{PacketConn: pc, p: p, max: max, raw: newRawUDP(pc)}
}

// WriteTo sends through raw when it can.
func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ua, ok := udpAddrOf(addr); ok { // srcaddr.go
		if done, err := c.raw.writeTo(b, ua.AddrPort()); done {
			if err != nil {
				return 0, err
			}
			return len(b), nil
		}
	}
	return c.PacketConn.WriteTo(b, plainAddr(addr))
}

func (c *udpConn) readOne(b []byte) (int, net.Addr, error) {
	if c.raw != nil {
		return c.raw.readFrom(b)
	}
	return c.PacketConn.ReadFrom(b)
}

func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.readOne(b)
		if err != nil {
			c.remember(nil, nil)
			return n, addr, err
		}
		data := b[:n]
		if n > c.max {
			c.p.oversized(data, func(out []byte) error { _, err := c.WriteTo(out, addr); return err })
			continue
		}
		n, why := rawSanity(data)
		if why != "" {
			c.p.refuseRaw(data, why, func(out []byte) error { _, err := c.WriteTo(out, addr); return err })
			continue
		}
		c.remember(b[:n], addr)
		return n, addr, nil
	}
}

// parseFailed is called (through the slog bridge) when sipgo could not
// parse data. It answers when data is the datagram just read.
func (c *udpConn) parseFailed(data string, perr string) {
	c.mu.Lock()
	last, addr := c.last, c.lastAddr
	match := last != nil && len(last) == len(data) && string(last) == data
	if match {
		c.last = nil
	}
	c.mu.Unlock()
	if match {
		c.p.rejectRaw(last, perr, func(out []byte) error { _, err := c.WriteTo(out, addr); return err })
	}
}

// oversized handles a message above max_message_size: a request gets 513,
// a response is dropped. Both are logged and counted.
func (p *Proxy) oversized(data []byte, send func([]byte) error) {
	id := rawCallID(data)
	if bytes.HasPrefix(data, []byte("SIP/")) {
		p.metrics.notSent.WithLabelValues(notSentRespTooBig).Inc()
		p.log.Warn().Str("call_id", id).Int("bytes", len(data)).Int("max_message_size", p.udpw.max).
			Msg("response above max_message_size dropped")
		return
	}
	p.metrics.malformed.WithLabelValues("too large").Inc()
	p.log.Warn().Str("call_id", id).Int("bytes", len(data)).Int("max_message_size", p.udpw.max).
		Msg("request above max_message_size answered 513")
	if out := rawResponse(data, 513, "Message Too Large", p.opts.UserAgent); out != nil {
		if err := send(out); err != nil {
			p.notSent("513", id, 513, err)
		}
	}
}

// WireOptions are the limits on what sipedge reads and sends.
type WireOptions struct {
	MaxMessageSize       int           // bytes; 0: DefaultMaxMessage
	TCPHeaderTimeout     time.Duration // 0: DefaultTCPHeaderTimeout; <0: none
	TCPIdleTimeout       time.Duration // 0: DefaultTCPIdleTimeout; <0: none
	TCPMaxConnsPerSource int           // 0: DefaultTCPMaxConnsPerSource; <0: no limit
	WSFrameTimeout       time.Duration // 0: DefaultWSFrameTimeout; <0: none
	DNSLookups           bool          // look up host names (off: no DNS query is ever sent)
}

func (w WireOptions) limits() tcpLimits {
	def := func(d, def time.Duration) time.Duration {
		switch {
		case d == 0:
			return def
		case d < 0:
			return 0
		}
		return d
	}
	lim := tcpLimits{headerTimeout: def(w.TCPHeaderTimeout, DefaultTCPHeaderTimeout),
		idleTimeout: def(w.TCPIdleTimeout, DefaultTCPIdleTimeout), maxPerSource: w.TCPMaxConnsPerSource,
		maxMessage: w.MaxMessageSize, frameTimeout: def(w.WSFrameTimeout, DefaultWSFrameTimeout)}
	if lim.maxPerSource == 0 {
		lim.maxPerSource = DefaultTCPMaxConnsPerSource
	}
	if lim.maxMessage <= 0 || lim.maxMessage > MaxUDPPayload {
		lim.maxMessage = DefaultMaxMessage
	}
	return lim
}

// wire wraps the listeners New bound and returns the user agent options
// that go with them.
func (p *Proxy) wire() []sipgo.UserAgentOption {
	configureSizes()
	lim := p.opts.Wire.limits()
	lim.src = newSourceConns(lim.maxPerSource) // one count per source over every stream listener
	p.udpw = newUDPConn(p.udp, p, lim.maxMessage)
	p.udp = p.udpw
	p.tcp = newLimitListener(p.tcp, p, lim)
	p.wireExtra(lim)
	p.wireSecure(lim) // streamguard.go

	// The listeners' parser (parser.go).
	opts := []sipgo.UserAgentOption{sipgo.WithUserAgentParser(newParser())}
	if p.opts.Secure.NodeTLS != nil {
		opts = append(opts, sipgo.WithUserAgenTLSConfig(p.opts.Secure.NodeTLS))
	}
	if p.opts.Wire.DNSLookups {
		return opts
	}
	return append(opts, sipgo.WithUserAgentDNSResolver(noDNSResolver(&p.metrics.dnsCount)))
}

// parseFailed receives sipgo's parse failures (slog bridge).
func (p *Proxy) parseFailed(data, perr string) {
	if p.udpw != nil {
		p.udpw.parseFailed(data, perr)
	}
	for _, l := range p.extra {
		if l.udpw != nil {
			l.udpw.parseFailed(data, perr)
		}
	}
}
