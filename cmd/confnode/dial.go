package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/nodeauth"
)

// dialPoll bounds one BRPOP, so the queue consumer notices shutdown within
// it (go-redis does not interrupt a blocking read when its context ends).
const dialPoll = time.Second

// dialRequest is one entry of the dial queue <prefix>dial:<node>, a JSON
// document pushed with LPUSH by `sipedgectl conf dial` (or redis-cli):
//
//	{"conf":"c1","uri":"sip:bob@10.0.0.5:5060","kind":"adp","role":"guest","keep_alive":"no","id":"r1"}
//
// role and keep_alive may be empty: the header is then not sent.
type dialRequest = contract.Dial

// parseDialRequest decodes and checks one queue entry.
func parseDialRequest(raw string) (dialRequest, sip.Uri, error) {
	var r dialRequest
	var uri sip.Uri
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return r, uri, fmt.Errorf("bad JSON: %w", err)
	}
	if err := contract.CheckDial(r); err != nil {
		return r, uri, err
	}
	if err := sip.ParseUri(r.URI, &uri); err != nil {
		return r, uri, fmt.Errorf("uri %q: %w", r.URI, err)
	}
	if (uri.Scheme != "sip" && uri.Scheme != "sips") || uri.Host == "" {
		return r, uri, fmt.Errorf("uri %q: want sip:user@host[:port]", r.URI)
	}
	return r, uri, nil
}

// dialQueue takes dial requests off this node's list until ctx ends and
// places each call in its own goroutine. Redis trouble is retried with
// backoff; a bad entry is logged and dropped.
func (n *node) dialQueue(ctx context.Context) {
	key := n.k.Dial(n.cfg.Name)
	var backoff time.Duration
	for ctx.Err() == nil {
		res, err := n.rdb.BRPop(ctx, dialPoll, key).Result()
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, redis.Nil):
			continue // nothing queued within dialPoll
		case err != nil:
			if backoff == 0 {
				n.log.Warn().Err(err).Str("key", key).Msg("dial queue unreadable, retrying with backoff")
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		if backoff > 0 {
			n.log.Info().Str("key", key).Msg("dial queue readable again")
			backoff = 0
		}
		if len(res) == 2 {
			n.startDial(ctx, res[1])
		}
	}
}

// startDial checks one entry and, unless confnode cannot dial, places the
// call on a goroutine that serve waits for.
func (n *node) startDial(ctx context.Context, raw string) {
	req, target, err := parseDialRequest(raw)
	if err != nil {
		if len(raw) > 200 {
			raw = raw[:200] + "…"
		}
		n.log.Warn().Err(err).Str("entry", raw).Msg("dial request skipped")
		return
	}
	log := n.log.With().Str("dial_id", req.ID).Str("conf_id", req.Conf).Str("uri", req.URI).
		Str("kind", req.Kind).Str("role", req.Role).Str("keep_alive", req.KeepAlive).Logger()
	if n.cfg.Proxy == "" {
		log.Warn().Msg("dial request refused: no --proxy to call through")
		return
	}
	n.mu.Lock()
	select {
	case <-n.stopping:
		n.mu.Unlock()
		log.Info().Msg("dial request refused: shutting down")
		return
	default:
	}
	n.dials.Add(1) // under mu, before serve closes stopping and waits
	n.mu.Unlock()
	go func() {
		defer n.dials.Done()
		n.dial(ctx, log, req, target)
	}()
}

// waitDials waits for the dials in progress, at most d.
func (n *node) waitDials(d time.Duration) {
	done := make(chan struct{})
	go func() { n.dials.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// dial places one call through the proxy and, once answered, keeps it as a
// call of conference req.Conf like any answered call.
func (n *node) dial(ctx context.Context, log zerolog.Logger, req dialRequest, target sip.Uri) {
	host, _, _ := net.SplitHostPort(n.udp.LocalAddr().String())
	media, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		log.Error().Err(err).Msg("dial failed: reserve media port")
		return
	}
	port := media.LocalAddr().(*net.UDPAddr).Port
	sessID := uint64(time.Now().UnixNano())
	offer, err := answerSDP(nil, n.advHost, port, sessID, sessID)
	if err != nil {
		media.Close()
		log.Error().Err(err).Msg("dial failed: build SDP offer")
		return
	}
	invite, err := n.dialInvite(req, target, offer)
	if err != nil {
		media.Close()
		log.Error().Err(err).Msg("dial failed: build INVITE")
		return
	}
	if secret, err := n.nodeSecret(ctx); err != nil {
		log.Warn().Err(err).Msg("no node secret: INVITE sent unsigned, sipedge will refuse it over UDP")
	} else {
		nodeauth.Sign(invite, secret, time.Now()) // after every X-Sipedge header is set
	}
	callID := invite.CallID().Value()
	log = log.With().Str("call_id", callID).Logger()

	dctx, cancel := context.WithTimeout(ctx, n.cfg.DialTimeout)
	defer cancel()
	log.Info().Str("proxy", n.cfg.Proxy).Int("media_port", port).Msg("dialing")
	sess, err := n.dialog.WriteInvite(dctx, invite)
	if err == nil {
		// Canceling dctx (timeout, shutdown) sends CANCEL along the Route.
		err = sess.WaitAnswer(dctx, sipgo.AnswerOptions{})
	}
	if err != nil {
		media.Close()
		status, reason := dialFailure(err)
		log.Warn().Err(err).Int("status", status).Str("reason", reason).Msg("dial failed")
		return
	}

	c := &call{id: callID, conf: req.Conf, dlg: sess, rtp: media, sdp: offer,
		sessID: sessID, version: sessID, started: time.Now(), acked: true}
	if n.cfg.RTP {
		if c.media, err = newRTPStream(media, log); err != nil {
			log.Error().Err(err).Msg("media setup failed")
		} else {
			c.media.update(sess.InviteResponse.Body())
		}
	}
	// Known before the ACK leaves, so a BYE right after it finds the call.
	n.mu.Lock()
	stopping := isClosed(n.stopping)
	_, dup := n.calls[c.id]
	if !stopping && !dup {
		n.calls[c.id] = c
	}
	active := len(n.calls)
	n.mu.Unlock()

	ackErr := sess.Ack(ctx)
	if stopping || dup || ackErr != nil {
		reason := "shutdown"
		switch {
		case dup:
			reason = "call-id in use"
		case ackErr != nil:
			reason = "ack failed"
			log.Warn().Err(ackErr).Msg("ACK failed")
		}
		bctx, bcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer bcancel()
		if err := sess.Bye(bctx); err != nil {
			log.Warn().Err(err).Msg("BYE failed")
		}
		if stopping || dup {
			media.Close()
			log.Info().Str("reason", reason).Msg("dialed call hung up")
			return
		}
		n.end(c, reason)
		return
	}
	if c.media != nil {
		c.media.start()
	}
	log.Info().Int("status", sess.InviteResponse.StatusCode).Int("active_calls", active).Msg("dialed call answered")
}

// dialInvite builds the INVITE for req: Request-URI the target, sent to the
// proxy as a preloaded Route (RFC 3261 §8.1.2), so CANCEL and ACKs of
// failures follow it too, with the X-Sipedge headers that tell sipedge who
// this participant is.
func (n *node) dialInvite(req dialRequest, target sip.Uri, offer []byte) (*sip.Request, error) {
	phost, pport, err := net.SplitHostPort(n.cfg.Proxy)
	if err != nil {
		return nil, fmt.Errorf("proxy %q: %w", n.cfg.Proxy, err)
	}
	port, err := strconv.Atoi(pport)
	if err != nil {
		return nil, fmt.Errorf("proxy %q: bad port", n.cfg.Proxy)
	}
	inv := sip.NewRequest(sip.INVITE, target)
	inv.SetTransport("UDP")
	route := sip.Uri{Scheme: "sip", Host: phost, Port: port, UriParams: sip.NewParams()}
	route.UriParams.Add("lr", "")
	inv.AppendHeader(&sip.RouteHeader{Address: route})

	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: req.Conf, Host: n.advHost, Port: n.advPort},
		Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	to := &sip.ToHeader{Address: sip.Uri{Scheme: target.Scheme, User: target.User, Host: target.Host, Port: target.Port}}
	callID := sip.CallIDHeader(sip.GenerateTagN(24) + "@" + n.advHost)
	inv.AppendHeader(from)
	inv.AppendHeader(to)
	inv.AppendHeader(&callID)
	inv.AppendHeader(sip.NewHeader("X-Sipedge-Conference", req.Conf))
	inv.AppendHeader(sip.NewHeader("X-Sipedge-Participant", req.Kind))
	if req.Role != "" {
		inv.AppendHeader(sip.NewHeader("X-Sipedge-Role", req.Role))
	}
	if req.KeepAlive != "" {
		inv.AppendHeader(sip.NewHeader("X-Sipedge-Keep-Alive", req.KeepAlive))
	}
	inv.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	inv.SetBody(offer)
	// Leave from the SIP listening socket: sipedge knows the node by that
	// address (and trusts the X-Sipedge headers from it).
	if la, ok := n.udp.LocalAddr().(*net.UDPAddr); ok {
		inv.Laddr = sip.Addr{IP: la.IP, Port: la.Port}
	}
	return inv, nil
}

// dialFailure names the outcome of an unanswered dial: the final status,
// or 408 when none came.
func dialFailure(err error) (int, string) {
	var rej *sipgo.ErrDialogResponse
	switch {
	case errors.As(err, &rej):
		return rej.Res.StatusCode, rej.Res.Reason
	case errors.Is(err, context.DeadlineExceeded):
		return 408, "not answered within --dial-timeout, canceled"
	case errors.Is(err, context.Canceled):
		return 487, "canceled at shutdown"
	}
	return 408, "no final response"
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
