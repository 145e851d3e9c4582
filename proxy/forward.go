package proxy

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/media"
)

// hop is where a forwarded request goes: always an address sipedge chose
// (a node from the ring, or the source it saw), never one read from the
// message itself.
type hop struct {
	addr      string // host:port
	transport string // udp | tcp
}

// fwdInfo carries what the relay loop must do besides relaying.
type fwdInfo struct {
	confID     string
	node       string
	instance   string      // instance that established the dialog
	callerTag  string      // From tag of the dialog's caller, from the route state ("" without one)
	newDialog  bool        // initial request: a 2xx to INVITE starts a dialog
	endsDialog bool        // BYE: its final response ends the dialog
	fromCaller bool        // sent by the dialog's caller: SDP in responses comes from the callee
	join       *media.Join // new INVITE dialog: the participant it becomes when answered
	anchored   bool        // new dialog whose media session must be freed if it fails
	failover   *failover   // new INVITE placed by admission: retried on the next node if its node fails it
	routes     ownRoutes   // sipedge's Record-Route for the request (new INVITE and SUBSCRIBE dialogs)

	ctx context.Context // the server transaction's context, made once per request (txctx.go)
}

// relayProvisional relays a provisional response upstream: one forward
// takes from the client transaction, or one that came off the socket
// before it (arrived). A 100 Trying only counts (the CANCEL may go, the
// clock notes it) and is never relayed (RFC 3261 §16.7: sipedge sent its
// own).
func (p *Proxy) relayProvisional(in *sip.Request, tx sip.ServerTransaction, res *sip.Response, info fwdInfo,
	canceller *cancelSender, clock *inviteClock) {
	if canceller != nil {
		canceller.provisional()
	}
	clock.response(res)
	if res.StatusCode == 100 {
		return
	}
	r := upstream(res)
	if r == nil {
		return
	}
	relayTo(r, in) // relaydest.go
	p.stripUntrustedResponse(res, r)
	p.anchorResponse(in, r, info)
	p.metrics.countResponse(r)
	if _, err := p.respondTx(tx, r); err != nil {
		p.notSent("relayed response", callID(in), r.StatusCode, err)
	}
}

// keepAsBuilt stops sipgo from adding headers of its own: the proxy has
// built the request completely (Via, Max-Forwards, routes).
func keepAsBuilt(*sipgo.Client, *sip.Request) error { return nil }

const connectTimeout = 5 * time.Second

// prepareForward applies the proxy's per-hop changes to the clone out:
// sipedge's Via on top, with rr (sipedge's Record-Route, may be empty)
// under it.
func (p *Proxy) prepareForward(in, out *sip.Request, next hop, branch []byte, rr []sip.Header) {
	if mf := out.MaxForwards(); mf != nil {
		mf.Dec()
	} else {
		v := sip.MaxForwardsHeader(70)
		out.PrependHeader(&v)
	}
	if via := out.Via(); via != nil {
		markReceived(via, in.Source())
	}
	from := p.sendsFrom(in, next) // the listen address toward next (listeners.go)
	var top [3]sip.Header         // one new header list for both (a prepend copies the list)
	top[0] = newVia(upper(next.transport), from.host, from.port, branch)
	out.PrependHeader(append(top[:1], rr...)...)
	out.SetDestination(next.addr)
	out.SetTransport(upper(next.transport))
	if next.transport == "udp" {
		// Leave from the listening socket so the node answers (and sends its
		// in-dialog requests) to the port it learned from Record-Route.
		out.Laddr = from.la
	} else {
		out.Laddr = sip.Addr{}
	}
}

// fwdCall is what forward shares with the callbacks of one forwarded
// request, in one allocation (they were five per call set-up): the hop and
// info its failover moves to another node, the INVITE's CANCEL sender, the
// failover run, and the server transaction's context (txContext).
type fwdCall struct {
	next      hop
	info      fwdInfo
	canceller cancelSender
	fo        failoverRun
	txc       txCtx
}

// txContext is txContext(tx) in c's own allocation.
func (c *fwdCall) txContext(tx sip.ServerTransaction) context.Context {
	if tx == nil {
		return context.Background()
	}
	c.txc.tx = tx
	return &c.txc
}

// forward sends out through a client transaction and relays every response
// to the server transaction tx until a final one. It runs on the goroutine
// sipgo gave the request, so it may block.
func (p *Proxy) forward(in *sip.Request, tx sip.ServerTransaction, out *sip.Request, to hop, fi fwdInfo) {
	p.forwardCall(in, tx, out, &fwdCall{next: to, info: fi})
}

// sendBranch starts the client transaction of out toward c.next. Its 2xx
// retransmissions go to the proxy's hook (retransmitted2xx), which relays
// only the branch forward settled on and holds nothing of the call.
func (p *Proxy) sendBranch(c *fwdCall, tx sip.ServerTransaction, out *sip.Request) (sip.ClientTransaction, error) {
	ctx, cancel := dialContext(c.info.txContext(tx), c.next)
	defer cancel()
	ctxTx, err := p.client.TransactionRequest(ctx, out, keepAsBuilt)
	if err != nil {
		return nil, err
	}
	ctxTx.OnRetransmission(p.retrans)
	return ctxTx, nil
}

// forwardCall is forward with the call's state made by the caller, its
// hop and info set (newDialog makes it first: its context serves
// admission). A new INVITE with a retry plan moves to the next node of the
// ring here, in the same loop, while its node fails it (failover_run.go).
func (p *Proxy) forwardCall(in *sip.Request, tx sip.ServerTransaction, out *sip.Request, c *fwdCall) {
	next, info := &c.next, &c.info // a failover rewrites them when it moves the call
	var br [branchRoom]byte
	p.prepareForward(in, out, *next, p.branch(br[:0], in), info.routes.list())
	b := liveBranch{out: out, line: p.rseq.openLine(ourINVITEBranch(out))} // responses relayed in arrival order (respseq.go)
	defer func() { p.rseq.closeLine(b.line) }()
	p.metrics.txActive.Inc()
	defer p.metrics.txActive.Dec()

	// A new call that never got its 2xx (refused, unreachable, timed out,
	// cancelled) frees its relay ports on whichever path ends it.
	var started bool
	if info.anchored {
		defer func() {
			if !started {
				p.mediaEnded(callID(in))
			}
		}()
	}

	var canceller *cancelSender
	if in.IsInvite() {
		canceller = &c.canceller
		canceller.p, canceller.invite = p, out
		tx.OnCancel(func(*sip.Request) { canceller.requested() })
	}

	if info.ctx == nil {
		info.ctx = c.txContext(tx)
	}
	var err error
	b.tx, err = p.sendBranch(c, tx, out)
	p.seq.handedOn(in) // sent (or failed): the dialog's next request may go
	fo := p.startFailover(c, in, tx, canceller)
	// Once the call is settled (this returns), the retry plan and the
	// participant are garbage.
	defer func() { fo.stop(); info.failover, info.join = nil, nil }()
	if err != nil {
		var moved bool
		if moved, err = fo.moveOn(c, &b, failTransport, nil, err); !moved {
			p.metrics.forwardErrors.WithLabelValues(string(in.Method)).Inc()
			p.notSent(string(in.Method)+" to "+next.addr, callID(in), 0, err)
			p.reply(tx, in, 503, "Service Unavailable (next hop unreachable)")
			return
		}
	}
	// After a non-2xx final response the client transaction lives on its
	// timers to ACK and absorb retransmitted answers. After a 2xx to INVITE
	// it is ended (finishClient) and its branch kept in the finished table:
	// the node's 2xx retransmissions are relayed statelessly from there
	// (unmatchedResponse) so the caller's ACK still comes.
	clock := p.timing.start(in, info.newDialog)

	for {
		select {
		case res, ok := <-b.tx.Responses():
			if !ok {
				return
			}
			before, skip := p.rseq.arrived(b.line, res)
			for _, early := range before {
				fo.provisional(early)
				p.relayProvisional(in, tx, early, *info, canceller, &clock)
			}
			if skip {
				continue // relayed already, ahead of one that overtook it
			}
			if res.IsProvisional() {
				fo.provisional(res)
				p.relayProvisional(in, tx, res, *info, canceller, &clock)
				continue
			}
			if reason := fo.retryable(res); reason != "" {
				switch moved, answered := p.failOver(fo, c, &b, in, tx, reason, res); {
				case moved:
					continue
				case answered:
					return
				}
				// No node is left: the node's own 408 or 5xx goes to the caller.
			}
			clock.response(res)
			if in.IsInvite() && res.IsSuccess() {
				// Before upstream takes our Via off, and before the 2xx is relayed.
				p.rememberBranch(b.tx, res, in, info.fromCaller)
			}
			r := upstream(res)
			if r == nil {
				continue
			}
			relayTo(r, in) // relaydest.go
			p.stripUntrustedResponse(res, r)
			p.anchorResponse(in, r, *info)
			if in.IsInvite() && res.IsSuccess() && info.newDialog && !started {
				started = true
				p.dialogStarted(p.newDialogRecord(in, res, *info,
					hop{addr: in.Source(), transport: lower(in.Transport())}, *next))
				if info.join != nil && p.media != nil {
					join := *info.join // the participant record outlives the transaction
					p.spawn(p.background(), func(ctx context.Context) { p.media.Joined(ctx, join) })
				}
			}
			if info.endsDialog {
				p.endOfDialog(in, *info, res.StatusCode)
			}
			p.metrics.countResponse(r)
			released, err := p.respondTx(tx, r)
			if err != nil {
				p.notSent("relayed response", callID(in), r.StatusCode, err)
			}
			p.finishClient(b.tx, canceller, in, r, released)
			return
		case <-b.tx.Done():
			if reason := fo.ended(b.tx); reason != "" {
				switch moved, answered := p.failOver(fo, c, &b, in, tx, reason, nil); {
				case moved:
					continue
				case answered:
					return
				}
			}
			p.noFinalResponse(in, tx, *info, *next, b.tx.Err())
			return
		case <-fo.tick():
			if reason := fo.fired(); reason != "" {
				if _, answered := p.failOver(fo, c, &b, in, tx, reason, nil); answered {
					return
				}
				// Moved, or no node is left (moveOn stopped the run) and the last node may still answer.
			}
		case <-tx.Done():
			// Cancelled upstream (sipgo has answered 487) or the server
			// transaction died: the CANCEL, if any, is on its way downstream.
			if fo != nil {
				p.orphan(in, b.tx, *next, canceller) // a call that may fail over listens to its branch to the end
			}
			return
		}
	}
}

// failOver moves the call to the next node after its branch b failed for
// reason (first: the node's 408 or 5xx). moved: the loop goes on with the
// new branch; answered: the last branch could not be sent and the caller
// got 503; neither: no node is left and b stays the call's.
func (p *Proxy) failOver(fo *failoverRun, c *fwdCall, b *liveBranch, in *sip.Request, tx sip.ServerTransaction,
	reason string, first *sip.Response) (moved, answered bool) {
	moved, err := fo.moveOn(c, b, reason, first, nil)
	if !moved && err != nil {
		p.noFinalResponse(in, tx, c.info, c.next, err)
		return false, true
	}
	return moved, false
}

// noFinalResponse answers the caller when the next hop gave no final
// response: 503 when it could not be reached (err is a transport error),
// 408 when it stayed silent.
func (p *Proxy) noFinalResponse(in *sip.Request, tx sip.ServerTransaction, info fwdInfo, next hop, err error) {
	p.metrics.forwardErrors.WithLabelValues(string(in.Method)).Inc()
	p.log.Info().AnErr("tx_error", err).Str("call_id", callID(in)).Str("to", next.addr).
		Msg("no final response from next hop")
	if info.endsDialog {
		p.endOfDialog(in, info, 408) // no answer
	}
	if errors.Is(err, sip.ErrTransactionTransport) {
		p.reply(tx, in, 503, "Service Unavailable (next hop unreachable)")
		return
	}
	p.reply(tx, in, 408, "Request Timeout")
}

// upstream turns a response from the next hop into the one sent back: the
// proxy's own Via goes. Nil means the response is not ours to relay.
//
// It edits res itself rather than a clone (twenty allocations, and a
// second copy held by the server transaction for its timers): the client
// transaction is done with a response once it has passed it up, and what
// the proxy still reads of it (status, To, Contact, source) stays.
func upstream(res *sip.Response) *sip.Response {
	if !res.RemoveHeader("Via") || res.Via() == nil {
		return nil
	}
	// Destination and transport are the hop the response came from; clear
	// them so both follow the Via now on top (received/rport).
	res.SetDestination("")
	res.SetTransport("")
	if dst, ok := viaDestinationIPv6(res.Via()); ok {
		// sipgo joins an IPv6 received= host and the port without
		// brackets ("::1:5060"), which no socket can dial.
		res.SetDestination(dst)
	}
	return res
}

// viaDestinationIPv6 is where RFC 3261 §18.2.2 and RFC 3581 send a
// response over an unreliable transport (received, else the Via host;
// rport, else the Via port), when that host is an IPv6 address.
func viaDestinationIPv6(via *sip.ViaHeader) (string, bool) {
	if via == nil {
		return "", false
	}
	host, port := via.Host, via.Port
	if via.Params != nil {
		if r, ok := via.Params.Get("received"); ok && r != "" {
			host = r
		}
		if rp, ok := via.Params.Get("rport"); ok && rp != "" {
			if n, err := strconv.Atoi(rp); err == nil {
				port = n
			}
		}
	}
	host = strings.Trim(host, "[]")
	if !strings.Contains(host, ":") {
		return "", false
	}
	if port == 0 {
		port = int(sip.DefaultPort(via.Transport))
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), true
}

// dialogStarted records a dialog set up here; the counts follow from it.
func (p *Proxy) dialogStarted(dl *dialog) {
	if !p.dialogs.Add(dl) {
		return
	}
	p.metrics.dialogsActive.Set(float64(p.dialogs.Len()))
	p.admit.DialogStarted(dl.confID, dl.node)
}

// cancelSender sends CANCEL downstream once both the upstream CANCEL and a
// provisional response from downstream have arrived (RFC 3261 §9.1: no
// CANCEL before a provisional response).
type cancelSender struct {
	p      *Proxy
	invite *sip.Request

	mu                    sync.Mutex
	wanted, gotProv, sent bool
}

func (c *cancelSender) requested() {
	c.mu.Lock()
	c.wanted = true
	c.mu.Unlock()
	c.maybeSend()
}

func (c *cancelSender) provisional() {
	c.mu.Lock()
	c.gotProv = true
	c.mu.Unlock()
	c.maybeSend()
}

func (c *cancelSender) maybeSend() {
	c.mu.Lock()
	send := c.wanted && c.gotProv && !c.sent && c.invite != nil
	var cancel *sip.Request
	var id string
	if send {
		c.sent = true
		// Built under the lock: once retired the INVITE may be emptied.
		cancel, id = cancelFor(c.invite), strings.Clone(callID(c.invite))
	}
	c.mu.Unlock()
	if !send {
		return
	}
	c.p.spawn(c.p.background(), func(ctx context.Context) {
		// Serve's context: the CANCEL goes on after the caller's transaction ends.
		ctx, done := context.WithTimeout(ctx, connectTimeout)
		defer done()
		if _, err := c.p.client.Do(ctx, cancel, keepAsBuilt); err != nil {
			c.p.notSent("CANCEL", id, 0, err)
		}
	})
}

// retire stops the sender for good once the call has its 2xx: it no
// longer reads the INVITE (finishClient releases it).
func (c *cancelSender) retire() {
	c.mu.Lock()
	c.invite, c.sent = nil, true
	c.mu.Unlock()
}

// cancelled reports whether the caller has asked to cancel.
func (c *cancelSender) cancelled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wanted
}

// retarget points the sender at the INVITE of a new branch (failover): a
// CANCEL then waits for a provisional of that branch. It reports false,
// changing nothing, when the caller has already asked to cancel.
func (c *cancelSender) retarget(invite *sip.Request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wanted {
		return false
	}
	c.invite, c.gotProv, c.sent = invite, false, false
	return true
}

// cancelFor builds the CANCEL for a forwarded INVITE (RFC 3261 §9.1): same
// Request-URI, Call-ID, From, To, CSeq number, Route and top Via.
func cancelFor(inv *sip.Request) *sip.Request {
	c := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	if via := inv.Via(); via != nil {
		c.AppendHeader(via.Clone())
	}
	for _, h := range inv.GetHeaders("Route") {
		c.AppendHeader(sip.HeaderClone(h))
	}
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	if h := inv.From(); h != nil {
		c.AppendHeader(sip.HeaderClone(h))
	}
	if h := inv.To(); h != nil {
		c.AppendHeader(sip.HeaderClone(h))
	}
	if h := inv.CallID(); h != nil {
		c.AppendHeader(sip.HeaderClone(h))
	}
	if h := inv.CSeq(); h != nil {
		c.AppendHeader(&sip.CSeqHeader{SeqNo: h.SeqNo, MethodName: sip.CANCEL})
	}
	c.SetBody(nil)
	c.SetDestination(inv.Destination())
	c.SetTransport(inv.Transport())
	c.Laddr = inv.Laddr
	return c
}

// anchorResponse rewrites the SDP of a response to INVITE, UPDATE or
// PRACK (an offer or answer of the side the request went to). A body that
// cannot be anchored is passed unchanged and counted: a response cannot be
// refused, and the caller still gets its call.
func (p *Proxy) anchorResponse(in *sip.Request, r *sip.Response, info fwdInfo) {
	switch in.Method {
	case sip.INVITE, sip.UPDATE, sip.PRACK:
	default:
		return
	}
	if err := p.anchor(r, callID(in), !info.fromCaller); err != nil {
		p.metrics.sdpRejected.WithLabelValues("passed").Inc()
		p.log.Warn().Err(err).Str("call_id", callID(in)).Int("code", r.StatusCode).
			Msg("SDP of a response cannot be anchored: passed unchanged")
	}
}

// stripUntrustedResponse removes X-Sipedge-* headers from every relayed
// response: nothing downstream needs them, and one from an untrusted
// source (the callee of a node's call) is counted as an attempt.
func (p *Proxy) stripUntrustedResponse(res, r *sip.Response) {
	if _, trusted := p.trustAddr(res.Source()); trusted {
		removeTrusted(r)
		return
	}
	p.stripTrusted(r)
}
