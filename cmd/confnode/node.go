package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
)

// node is one running confnode: a SIP UA on UDP and TCP that answers calls,
// plus the Redis registration that puts it in the sipedge ring.
type node struct {
	cfg config
	log zerolog.Logger
	rdb redis.UniversalClient
	k   keys.Keys

	slog   *slog.Logger // sipgo's logger
	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	dialog *sipgo.DialogUA

	udp     net.PacketConn
	tcp     net.Listener
	tls     net.Listener // --tls-listen (tls.go); nil: off
	tlsPort int

	advHost string // host written in Contact, SDP and Redis
	advPort int

	stopping chan struct{}  // closed (under mu) when shutdown begins
	dials    sync.WaitGroup // outgoing INVITEs in progress (dial.go)

	mu     sync.Mutex
	calls  map[string]*call // by Call-ID
	secret string           // node secret last read from Redis (secret.go)
}

// session is what a call needs from its sipgo dialog, whichever side
// created it.
type session interface {
	LoadState() sip.DialogState
	Bye(ctx context.Context) error
	ReadBye(req *sip.Request, tx sip.ServerTransaction) error
	ReadRequest(req *sip.Request, tx sip.ServerTransaction) error
}

var (
	_ session = (*sipgo.DialogServerSession)(nil)
	_ session = (*sipgo.DialogClientSession)(nil)
)

// call is one active dialog: answered (uas set) or placed by confnode.
type call struct {
	id      string
	conf    string
	dlg     session
	uas     *sipgo.DialogServerSession // nil for calls confnode placed
	rtp     net.PacketConn             // the call's media port
	media   *rtpStream                 // nil with --rtp=false
	sdp     []byte
	sessID  uint64 // SDP o= session id, fixed for the dialog
	version uint64 // SDP o= version, +1 per new answer (guarded by node.mu)
	started time.Time
	acked   bool // guarded by node.mu
}

// newNode builds a node; listen binds its sockets and serve runs it.
func newNode(cfg config, log zerolog.Logger, rdb redis.UniversalClient) (*node, error) {
	// sipgo logs through slog; route it into our zerolog output.
	slogger := slog.New(zerolog.NewSlogHandler(log.With().Str("component", "sipgo").Logger()))
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent("confnode"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(slogger)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(slogger)),
	)
	if err != nil {
		return nil, fmt.Errorf("sip user agent: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(slogger))
	if err != nil {
		return nil, fmt.Errorf("sip server: %w", err)
	}
	n := &node{
		cfg: cfg, log: log, rdb: rdb, k: keys.New(cfg.Prefix),
		ua: ua, srv: srv, slog: slogger,
		stopping: make(chan struct{}),
		calls:    make(map[string]*call),
	}
	srv.OnInvite(n.onInvite)
	srv.OnAck(n.onAck)
	srv.OnBye(n.onBye)
	srv.OnCancel(n.onCancel)
	srv.OnOptions(n.onOptions)
	srv.OnRegister(n.onRegister)
	srv.OnSubscribe(n.onSubscribe)
	srv.OnInfo(n.onInDialog)
	srv.OnUpdate(n.onInDialog)
	return n, nil
}

// listen binds UDP and TCP on the same host:port (port 0 picks a free one)
// and works out the advertised address. On error nothing stays open.
func (n *node) listen() (err error) {
	defer func() {
		if err != nil {
			n.ua.Close()
			if n.udp != nil {
				n.udp.Close()
				n.tcp.Close()
			}
		}
	}()
	host, port, err := net.SplitHostPort(n.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", n.cfg.Listen, err)
	}
	for attempt := 0; ; attempt++ {
		udp, err := net.ListenPacket("udp", net.JoinHostPort(host, port))
		if err != nil {
			return fmt.Errorf("listen udp %s: %w", n.cfg.Listen, err)
		}
		_, got, _ := net.SplitHostPort(udp.LocalAddr().String())
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, got))
		if err != nil {
			udp.Close()
			if port == "0" && attempt < 10 {
				continue // the free UDP port is taken on TCP; pick another
			}
			return fmt.Errorf("listen tcp %s: %w", net.JoinHostPort(host, got), err)
		}
		n.udp, n.tcp = udp, tcp
		break
	}

	adv := n.cfg.Advertise
	if adv == "" {
		adv = n.udp.LocalAddr().String()
	}
	h, p, err := net.SplitHostPort(adv)
	if err != nil {
		return fmt.Errorf("advertise address %q: %w", adv, err)
	}
	if n.advPort, err = strconv.Atoi(p); err != nil || n.advPort <= 0 || n.advPort > 65535 {
		return fmt.Errorf("advertise address %q: bad port", adv)
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("advertise address %q is unspecified: set --advertise", adv)
	}
	n.advHost = h
	client, err := sipgo.NewClient(n.ua, sipgo.WithClientHostname(h), sipgo.WithClientLogger(n.slog))
	if err != nil {
		return fmt.Errorf("sip client: %w", err)
	}
	n.dialog = &sipgo.DialogUA{Client: client, ContactHDR: n.contact("udp")}
	return nil
}

// advertise is the host:port other parties use to reach this node.
func (n *node) advertise() string { return net.JoinHostPort(n.advHost, strconv.Itoa(n.advPort)) }

// serve runs SIP and the Redis heartbeat until ctx ends, then hangs up the
// remaining calls and closes everything.
func (n *node) serve(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = n.srv.ServeUDP(n.udp) }()
	go func() { defer wg.Done(); _ = n.srv.ServeTCP(n.tcp) }()
	go func() { defer wg.Done(); n.heartbeat(ctx) }()
	if n.tls != nil {
		wg.Add(1)
		go func() { defer wg.Done(); _ = n.srv.ServeTLS(n.tls) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); n.dialQueue(ctx) }()
	n.log.Info().Str("listen", n.udp.LocalAddr().String()).Str("advertise", n.advertise()).
		Str("node", n.cfg.Name).Msg("confnode started")

	<-ctx.Done()
	n.mu.Lock()
	close(n.stopping) // ringing calls are refused with 503 by onInvite, dials refused
	n.mu.Unlock()
	n.waitDials(2 * time.Second) // their context is done: each sends CANCEL
	n.hangupAll()
	for deadline := time.Now().Add(time.Second); n.activeCalls() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	n.udp.Close()
	n.tcp.Close()
	if n.tls != nil {
		n.tls.Close()
	}
	_ = n.ua.Close() // ends the transactions of dials still waiting
	wg.Wait()
	n.dials.Wait()
	n.log.Info().Str("node", n.cfg.Name).Msg("confnode stopped")
	return nil
}

// contact is this node's Contact for a request that came over transport.
func (n *node) contact(transport string) sip.ContactHeader {
	uri := sip.Uri{Scheme: "sip", User: n.cfg.Name, Host: n.advHost, Port: n.advPort}
	if t := sip.NetworkToLower(transport); t != "udp" && t != "" {
		uri.UriParams = sip.NewParams()
		uri.UriParams.Add("transport", t)
		if t == "tls" && n.tlsPort != 0 {
			uri.Port = n.tlsPort
		}
	}
	return sip.ContactHeader{Address: uri}
}

// activeCalls is the number of dialogs in progress.
func (n *node) activeCalls() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.calls)
}

func (n *node) lookup(callID string) *call {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls[callID]
}

// end removes a call, frees its media port and logs why it ended.
func (n *node) end(c *call, reason string) {
	n.mu.Lock()
	if n.calls[c.id] != c {
		n.mu.Unlock()
		return
	}
	delete(n.calls, c.id)
	n.mu.Unlock()
	if c.media != nil {
		c.media.stop()
	}
	c.rtp.Close()
	sent, received := c.media.counts()
	n.log.Info().Str("call_id", c.id).Str("conf_id", c.conf).Str("reason", reason).
		Stringer("duration", time.Since(c.started).Round(time.Millisecond)).Uint64("rtp_sent", sent).Uint64("rtp_received", received).
		Int("active_calls", n.activeCalls()).Msg("call ended")
}

// hangupAll sends BYE on every answered call at shutdown.
func (n *node) hangupAll() {
	n.mu.Lock()
	calls := make([]*call, 0, len(n.calls))
	for _, c := range n.calls {
		if c.dlg.LoadState() >= sip.DialogStateEstablished {
			calls = append(calls, c)
		}
	}
	n.mu.Unlock()

	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := c.dlg.Bye(ctx); err != nil {
				log := n.logFor(c)
				log.Warn().Err(err).Msg("BYE at shutdown failed")
			}
			n.end(c, "shutdown")
		}()
	}
	wg.Wait()
}

// errCallExists rejects a second dialog-creating INVITE with a Call-ID in use.
var errCallExists = errors.New("call-id already in use")
