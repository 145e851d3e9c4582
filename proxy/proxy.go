// Package proxy is sipedge's SIP front end: a transaction-stateful proxy on
// sipgo. It asks admission where each new dialog goes, records its choice in
// a sealed (AES-GCM) Record-Route so any instance can route the dialog's later
// requests with no local state, and relays responses back over the
// transport each request came on.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/internal/logging"
)

// Admitter decides new dialogs and records conference placements.
type Admitter interface {
	Admit(ctx context.Context, req admission.Request) admission.Verdict
	// DialogStarted and DialogEnded report a dialog set up here that was
	// added to or removed from this instance's dialog set; they must not
	// block (the counts are written asynchronously).
	DialogStarted(confID, node string)
	DialogEnded(confID, node string)
	// DialogEndedElsewhere reports the end of dialog key of conference
	// confID on node, set up by instance owner.
	DialogEndedElsewhere(ctx context.Context, owner, confID, node, callID, key string)
}

var _ Admitter = (*admission.Admitter)(nil)

// Options configures a Proxy.
type Options struct {
	Listen      string        // HOST:PORT for UDP and TCP
	ListenExtra []string      // more IP:PORT addresses for UDP and TCP (listeners.go)
	Secure      SecureOptions // TLS, WS and WSS listeners (secure.go)
	Advertise   string        // HOST[:PORT] for Via and Record-Route; default: the listen address
	RouteSecret string        // key sealing Record-Route state (current: encodes); shared by all instances
	UserAgent   string        // Server / User-Agent header value
	UDPBuffer   int           // socket buffer bytes of the UDP listener (0: kernel default)
	Instance    string        // this instance's name, carried in Record-Route state
	Media       Media         // RTP anchoring; nil turns it off
	Trust       TrustFunc     // who may set X-Sipedge-* headers; nil trusts nobody
	Wire        WireOptions

	// ExtraAdvertise, parallel to ListenExtra, is the HOST[:PORT] each
	// extra address is named by ("" or missing: its IP:PORT).
	ExtraAdvertise []string

	OldRouteSecrets []string      // also accepted on decode, never used to encode (rotation)
	NodeSecrets     []string      // keys of nodes' X-Sipedge-Auth proofs; empty: no node call over UDP
	NodeAuthWindow  time.Duration // how far a proof's timestamp may be off (0: 30 s)
	// Limits are the flood limits (limits.go).
	Limits LimitOptions

	// A new INVITE whose node gives no response other than 100 within
	// FailoverTimeout (0: DefaultFailoverTimeout), cannot be reached, or
	// answers 408 or 5xx, is retried on the next node of the ring, at most
	// FailoverAttempts times (0: never). The Admitter must be a Failoverer.
	FailoverAttempts int
	FailoverTimeout  time.Duration
}

// Proxy is a running SIP proxy.
type Proxy struct {
	opts    Options
	admit   Admitter
	log     zerolog.Logger
	metrics *metrics
	timing  *inviteTiming
	signer  routeSigner
	auth    nodeAuth // node proofs (trust.go)

	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client

	secure  secureListeners
	extra   []extraListener // Options.ListenExtra (listeners.go)
	udp     net.PacketConn
	tcp     net.Listener
	udpLA   sip.Addr // local address of the UDP listener: requests leave from it
	advHost string
	advPort int

	slog *slog.Logger // sipgo's logs, bridged to zerolog

	udpw *udpConn // the UDP listener as sipgo reads it

	dialogs dialogSet
	seq     *sequencer // keeps each dialog's requests in arrival order
	rseq    *respSeq   // keeps each INVITE's responses in arrival order (respseq.go)
	media   Media      // nil: media not anchored
	bg      owned      // goroutines Serve owns and waits for (owned.go)

	serveCtx   atomic.Pointer[context.Context] // Serve's: work that outlives a transaction (txctx.go)
	server     sip.Header                      // Server header of the proxy's own answers (clone.go)
	serverOnce sync.Once

	// retrans is retransmitted2xx bound once in NewEndpoint: a method value
	// passed to OnRetransmission would allocate a closure on every client
	// transaction (twice per call set-up with failover on).
	retrans sip.FnTxResponse

	timers timerPool // the failover waits' timers (timers.go)

	// flood limits (limits.go, limits_hooks.go)
	limits       *limiter
	limitMetrics *limitMetrics
	limitLogs    [numLimitReasons]*logging.Sampled
	noAckLog     *logging.Sampled

	sl  stateless // the stateless reject path (stateless.go)
	fin *finished // finished transactions: key and last response (finished*.go)
}

// New binds the listeners (so a bad or busy address fails at start-up) and
// prepares the SIP stack (NewEndpoint), then the proxy on it with admit and
// opts.Trust; Serve starts handling traffic.
func New(opts Options, admit Admitter, log zerolog.Logger, reg prometheus.Registerer) (*Proxy, error) {
	e, err := NewEndpoint(opts, log, reg)
	if err != nil {
		return nil, err
	}
	return e.Proxy(admit, opts.Trust), nil
}

// NewEndpoint binds the listeners and prepares the SIP stack, without the
// admitter and trust check (endpoint.go); opts.Trust is not used.
func NewEndpoint(opts Options, log zerolog.Logger, reg prometheus.Registerer) (*Endpoint, error) {
	if opts.RouteSecret == "" {
		return nil, errors.New("proxy: empty route secret")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	p := &Proxy{opts: opts, log: log, metrics: m, media: opts.Media}
	p.retrans = p.retransmitted2xx
	if p.timing, err = newInviteTiming(reg); err != nil {
		return nil, err
	}
	if err := p.initTrust(); err != nil {
		return nil, err
	}
	if err := p.initLimits(reg); err != nil {
		return nil, err
	}
	if err := p.initFinished(reg); err != nil {
		return nil, err
	}
	if err := p.listen(); err != nil {
		return nil, err
	}
	if err := p.listenExtra(); err != nil {
		p.closeListeners()
		return nil, err
	}
	if err := p.listenSecure(); err != nil {
		p.closeListeners()
		return nil, err
	}
	uaOpts := p.wire()
	slog := newSlogBridge(log, m, p.parseFailed)
	p.slog = slog
	p.ua, err = sipgo.NewUA(append(uaOpts,
		sipgo.WithUserAgent(opts.UserAgent),
		sipgo.WithUserAgentHostname(p.advHost),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(slog),
			sip.WithTransportLayerReadFilter(p.readFilter)), // readfilter.go
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(slog),
			sip.WithTransactionLayerUnhandledResponseHandler(p.unmatchedResponse)),
	)...)
	if err != nil {
		p.closeListeners()
		return nil, fmt.Errorf("proxy: create user agent: %w", err)
	}
	if err := p.hookNodeTLS(); err != nil { // nodetls.go
		p.closeListeners()
		return nil, err
	}
	p.srv, err = sipgo.NewServer(p.ua, sipgo.WithServerLogger(slog))
	if err != nil {
		p.closeListeners()
		return nil, fmt.Errorf("proxy: create server: %w", err)
	}
	p.client, err = sipgo.NewClient(p.ua, sipgo.WithClientLogger(slog),
		sipgo.WithClientHostname(p.advHost), sipgo.WithClientPort(p.advPort))
	if err != nil {
		p.closeListeners()
		return nil, fmt.Errorf("proxy: create client: %w", err)
	}
	p.orderRequests()
	p.srv.OnNoRoute(p.onRequest)
	for _, method := range []sip.RequestMethod{sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.REGISTER,
		sip.OPTIONS, sip.SUBSCRIBE, sip.NOTIFY, sip.REFER, sip.INFO, sip.MESSAGE, sip.PRACK, sip.UPDATE, sip.PUBLISH} {
		p.srv.OnRequest(method, p.onRequest)
	}
	return &Endpoint{p: p}, nil
}

// listen binds UDP first and TCP on the same port, so "port 0" still gives
// one port for both transports. With port 0 the kernel may hand out a UDP
// port whose TCP twin is taken: then it tries another.
func (p *Proxy) listen() error {
	_, port, _ := net.SplitHostPort(p.opts.Listen)
	for attempt := 1; ; attempt++ {
		err := p.listenOnce()
		if err == nil || port != "0" || attempt == 5 || !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
	}
}

func (p *Proxy) listenOnce() error {
	udp, err := net.ListenPacket("udp", p.opts.Listen)
	if err != nil {
		return fmt.Errorf("proxy: listen udp %s: %w", p.opts.Listen, err)
	}
	if uc, ok := udp.(*net.UDPConn); ok && p.opts.UDPBuffer > 0 {
		// Bursts of datagrams overflow the kernel's default ~200 KiB buffer
		// long before the CPU is busy; drops show as RcvbufErrors.
		_ = uc.SetReadBuffer(p.opts.UDPBuffer)
		_ = uc.SetWriteBuffer(p.opts.UDPBuffer)
	}
	ua := udp.LocalAddr().(*net.UDPAddr)
	tcp, err := net.Listen("tcp", net.JoinHostPort(ua.IP.String(), strconv.Itoa(ua.Port)))
	if err != nil {
		udp.Close()
		return fmt.Errorf("proxy: listen tcp %s: %w", p.opts.Listen, err)
	}
	p.udp, p.tcp = udp, tcp
	p.udpLA = sip.Addr{IP: ua.IP, Port: ua.Port}
	p.advHost, p.advPort = advertised(p.opts.Advertise, ua)
	return nil
}

// advertised resolves the address written into Via and Record-Route.
func advertised(adv string, local *net.UDPAddr) (string, int) {
	if adv != "" {
		if h, ps, err := net.SplitHostPort(adv); err == nil {
			port, _ := strconv.Atoi(ps)
			return h, port
		}
		return adv, local.Port
	}
	if local.IP.IsUnspecified() {
		// Listening on every address: loopback is the only one we can be
		// sure a peer on this host reaches; deployments set --advertise.
		return "127.0.0.1", local.Port
	}
	return local.IP.String(), local.Port
}

// Addr is the advertised HOST:PORT of this proxy.
func (p *Proxy) Addr() string { return net.JoinHostPort(p.advHost, strconv.Itoa(p.advPort)) }

// SlogLogger is the slog bridge into this proxy's zerolog logger; the
// daemon makes it sipgo's process-wide default so no sipgo line escapes.
func (p *Proxy) SlogLogger() *slog.Logger { return p.slog }

// Client exposes the SIP client (the OPTIONS prober uses it).
func (p *Proxy) Client() *sipgo.Client { return p.client }

// ActiveDialogs is the number of dialogs established through this instance.
func (p *Proxy) ActiveDialogs() int { return p.dialogs.Len() }

// Serve handles SIP until ctx is done.
func (p *Proxy) Serve(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx) // ends the owned goroutines on either way out
	defer stop()
	p.serveCtx.Store(&ctx)
	errc := make(chan error, 5+2*len(p.extra))
	p.serveOn(ctx, errc, func() error { return p.srv.ServeUDP(p.udp) })
	p.awaitUDPListener(p.udp) // before TCP: a TCP request forwarded over UDP needs it (ready.go)
	p.serveOn(ctx, errc, func() error { return p.srv.ServeTCP(p.tcp) })
	if names := p.serveExtra(errc); len(names) > 0 {
		p.log.Info().Strs("listeners", names).Msg("SIP proxy listening (udp, tcp; more addresses)")
	}
	if names := p.serveSecure(errc); len(names) > 0 {
		p.log.Info().Strs("listeners", names).Msg("SIP proxy listening (secure and web transports)")
	}
	p.spawn(ctx, func(ctx context.Context) { p.dialogs.sweep(ctx, time.Minute) })
	p.spawn(ctx, func(ctx context.Context) { p.seq.sweep(ctx, time.Second) })
	p.spawn(ctx, p.runLimits)
	p.spawn(ctx, p.fin.sweep)
	p.log.Info().Str("listen", p.udp.LocalAddr().String()).Str("advertise", p.Addr()).Msg("SIP proxy listening (udp, tcp)")
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("proxy: serve: %w", err)
	}
	stop()
	p.closeListeners()
	p.bg.wait()
	if err == nil {
		_ = p.ua.Close()
	}
	return err
}

// serveOn runs one listener's serve loop as an owned goroutine; its error
// (a listener that fails) ends Serve. Closing the listener ends it.
func (p *Proxy) serveOn(ctx context.Context, errc chan<- error, serve func() error) {
	p.spawn(ctx, func(context.Context) { errc <- serve() })
}

func (p *Proxy) closeListeners() {
	p.closeSecure()
	p.closeExtra()
	if p.udp != nil {
		p.udp.Close()
	}
	if p.tcp != nil {
		p.tcp.Close()
	}
}
