package main

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"
)

// allowed is what confnode answers to (Allow header of OPTIONS and 405s).
const allowed = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, SUBSCRIBE, INFO, UPDATE"

// callLog returns a logger carrying the Call-ID and conference id (the
// Request-URI user) of req.
func (n *node) callLog(req *sip.Request) zerolog.Logger {
	callID := ""
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	return n.log.With().Str("call_id", callID).Str("conf_id", req.Recipient.User).Logger()
}

// logFor returns a logger for an in-dialog request of c: its Request-URI is
// this node's Contact, so the conference id comes from the call.
func (n *node) logFor(c *call) zerolog.Logger {
	return n.log.With().Str("call_id", c.id).Str("conf_id", c.conf).Logger()
}

// reply answers req statelessly of any dialog, logging a failed send.
func reply(log zerolog.Logger, req *sip.Request, tx sip.ServerTransaction, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		log.Warn().Err(err).Str("method", string(req.Method)).Int("status", code).Msg("send response failed")
	}
}

// onInvite answers a new call: 100, optionally 180 for --answer-delay, then
// 200 with an SDP answer on a freshly reserved media port.
func (n *node) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	log := n.callLog(req)
	if to := req.To(); to != nil && to.Params.Has("tag") {
		n.onInDialog(req, tx)
		return
	}
	reply(log, req, tx, 100, "Trying")

	host, _, _ := net.SplitHostPort(n.udp.LocalAddr().String())
	rtp, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		log.Error().Err(err).Msg("reserve media port failed")
		reply(log, req, tx, 500, "Server Internal Error")
		return
	}
	port := rtp.LocalAddr().(*net.UDPAddr).Port
	sessID := uint64(time.Now().UnixNano())
	answer, err := answerSDP(req.Body(), n.advHost, port, sessID, sessID)
	if err != nil {
		rtp.Close()
		log.Info().Err(err).Msg("call rejected: unusable SDP offer")
		if errors.Is(err, errNoCommonCodec) {
			reply(log, req, tx, 488, "Not Acceptable Here")
		} else {
			reply(log, req, tx, 400, "Bad SDP")
		}
		return
	}
	dlg, err := n.dialog.ReadInvite(req, tx)
	if err != nil {
		rtp.Close()
		log.Info().Err(err).Msg("call rejected: bad INVITE")
		reply(log, req, tx, 400, "Bad Request")
		return
	}

	c := &call{id: req.CallID().Value(), conf: req.Recipient.User, dlg: dlg, uas: dlg, rtp: rtp,
		sdp: answer, sessID: sessID, version: sessID, started: time.Now()}
	if n.cfg.RTP {
		if c.media, err = newRTPStream(rtp, log); err != nil {
			rtp.Close()
			log.Error().Err(err).Msg("media setup failed")
			reply(log, req, tx, 500, "Server Internal Error")
			return
		}
		c.media.update(req.Body())
	}
	n.mu.Lock()
	if _, dup := n.calls[c.id]; dup {
		n.mu.Unlock()
		rtp.Close()
		log.Warn().Err(errCallExists).Msg("call rejected: merged request")
		reply(log, req, tx, 482, "Loop Detected")
		return
	}
	n.calls[c.id] = c
	active := len(n.calls)
	n.mu.Unlock()
	log.Info().Str("from", req.From().Address.String()).Str("transport", req.Transport()).
		Str("source", req.Source()).Int("media_port", port).Int("active_calls", active).Msg("call started")

	contact := n.contact(req.Transport())
	if n.cfg.AnswerDelay > 0 {
		if err := dlg.Respond(180, "Ringing", nil, &contact); err != nil {
			log.Warn().Err(err).Msg("send 180 failed")
		}
		select {
		case <-time.After(n.cfg.AnswerDelay):
		case <-dlg.Context().Done():
			n.end(c, "canceled")
			return
		case <-n.stopping:
			if err := dlg.Respond(503, "Service Unavailable", nil, &contact); err != nil {
				log.Warn().Err(err).Msg("send 503 failed")
			}
			n.end(c, "shutdown")
			return
		}
	}

	res := sip.NewSDPResponseFromRequest(dlg.InviteRequest, answer)
	res.AppendHeader(&contact)
	log.Info().Msg("call answered")
	if c.media != nil {
		// RTP flows from the answer on, ACK or not; end() stops it. The
		// first packet leaves one ptime later, after the 200 is on the wire.
		c.media.start()
	}
	err = dlg.WriteResponse(res) // returns once the ACK came (or 64*T1 passed)
	switch {
	case errors.Is(context.Cause(dlg.Context()), sip.ErrTransactionCanceled):
		n.end(c, "canceled")
	case dlg.LoadState() == sip.DialogStateEnded:
		// BYE before ACK: onBye already ended it.
	case err != nil:
		log.Warn().Err(err).Msg("send 200 OK failed")
		n.end(c, "answer failed")
	case dlg.LoadState() < sip.DialogStateConfirmed:
		log.Warn().Msg("no ACK for 200 OK, hanging up")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := dlg.Bye(ctx); err != nil {
			log.Warn().Err(err).Msg("BYE failed")
		}
		n.end(c, "no ACK")
	}
}

// onInDialog handles re-INVITE, UPDATE and INFO of a known call: a new SDP
// answer on the same media port when there is an offer, else a plain 200.
func (n *node) onInDialog(req *sip.Request, tx sip.ServerTransaction) {
	log := n.callLog(req)
	c := n.lookup(req.CallID().Value())
	if c == nil {
		reply(log, req, tx, 481, "Call/Transaction Does Not Exist")
		return
	}
	log = n.logFor(c)
	if req.IsInvite() {
		if err := c.dlg.ReadRequest(req, tx); err != nil {
			reply(log, req, tx, 500, "Server Internal Error")
			return
		}
	}
	contact := n.contact(req.Transport())
	if req.Method == sip.INFO || (req.Method == sip.UPDATE && len(req.Body()) == 0) {
		reply(log, req, tx, 200, "OK", &contact)
		return
	}
	n.mu.Lock()
	c.version++
	version := c.version
	n.mu.Unlock()
	answer, err := answerSDP(req.Body(), n.advHost, c.rtp.LocalAddr().(*net.UDPAddr).Port, c.sessID, version)
	if err != nil {
		log.Info().Err(err).Str("method", string(req.Method)).Msg("session change rejected")
		reply(log, req, tx, 488, "Not Acceptable Here")
		return
	}
	res := sip.NewSDPResponseFromRequest(req, answer)
	res.AppendHeader(&contact)
	if err := tx.Respond(res); err != nil {
		log.Warn().Err(err).Msg("send 200 OK failed")
		return
	}
	if c.media != nil {
		c.media.update(req.Body()) // a new offer moves or pauses the RTP
	}
	log.Info().Str("method", string(req.Method)).Msg("call session refreshed")
}

// onAck confirms an answered call.
func (n *node) onAck(req *sip.Request, tx sip.ServerTransaction) {
	log := n.callLog(req)
	c := n.lookup(req.CallID().Value())
	if c == nil {
		log.Debug().Msg("ACK for unknown call ignored")
		return
	}
	log = n.logFor(c)
	if c.media != nil {
		c.media.update(req.Body()) // the answer to a late offer, if any
	}
	if c.uas == nil {
		return // ACK of a re-INVITE on a call confnode placed
	}
	if err := c.uas.ReadAck(req, tx); err != nil {
		log.Debug().Err(err).Msg("ACK ignored")
		return
	}
	n.mu.Lock()
	first := !c.acked
	c.acked = true
	n.mu.Unlock()
	if first {
		log.Info().Msg("call confirmed")
	}
}

// onBye ends a call with 200, or 481 when the call is unknown.
func (n *node) onBye(req *sip.Request, tx sip.ServerTransaction) {
	log := n.callLog(req)
	c := n.lookup(req.CallID().Value())
	if c == nil {
		log.Info().Msg("BYE for unknown call")
		reply(log, req, tx, 481, "Call/Transaction Does Not Exist")
		return
	}
	log = n.logFor(c)
	if err := c.dlg.ReadBye(req, tx); err != nil {
		log.Warn().Err(err).Msg("BYE rejected")
		reply(log, req, tx, 500, "Server Internal Error")
		return
	}
	reason := "bye"
	if r := headerValue(req, "Reason"); r != "" {
		reason = "bye (" + r + ")" // sipedge says why it ended the call
	}
	n.end(c, reason)
}

// onCancel sees only CANCELs that match no INVITE transaction: the
// transaction layer answers matching ones itself (200, then 487 to the
// INVITE), which ends the dialog context onInvite waits on.
func (n *node) onCancel(req *sip.Request, tx sip.ServerTransaction) {
	log := n.callLog(req)
	log.Info().Msg("CANCEL for unknown transaction")
	reply(log, req, tx, 481, "Call/Transaction Does Not Exist")
}

// onOptions answers keepalive probes (sipedge health checks).
func (n *node) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	contact := n.contact(req.Transport())
	reply(n.callLog(req), req, tx, 200, "OK", &contact,
		sip.NewHeader("Allow", allowed), sip.NewHeader("Accept", "application/sdp"))
}

// onRegister accepts every registration, echoing Contact and Expires.
func (n *node) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	log := n.callLog(req)
	var hdrs []sip.Header
	for _, h := range req.GetHeaders("Contact") {
		hdrs = append(hdrs, sip.HeaderClone(h))
	}
	if h := req.GetHeader("Expires"); h != nil {
		hdrs = append(hdrs, sip.HeaderClone(h))
	}
	log.Info().Str("aor", req.To().Address.String()).Msg("register accepted")
	reply(log, req, tx, 200, "OK", hdrs...)
}

// onSubscribe accepts every subscription with its Expires (3600 s if absent).
func (n *node) onSubscribe(req *sip.Request, tx sip.ServerTransaction) {
	log := n.callLog(req)
	expires := sip.Header(sip.NewHeader("Expires", "3600"))
	if h := req.GetHeader("Expires"); h != nil {
		expires = sip.HeaderClone(h)
	}
	contact := n.contact(req.Transport())
	log.Info().Str("event", headerValue(req, "Event")).Msg("subscribe accepted")
	reply(log, req, tx, 200, "OK", &contact, expires)
}

func headerValue(req *sip.Request, name string) string {
	if h := req.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}
