package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/admission"
)

// Failoverer picks the node a new dialog is retried on when its node
// failed it, and tells whether a node is still healthy in the ring
// (admission.Admitter does); an Admitter without it gets no failover.
type Failoverer interface {
	Failover(ctx context.Context, req admission.Request, failed string, tried []string) admission.Verdict
	Healthy(node string) bool
}

var _ Failoverer = (*admission.Admitter)(nil)

// Failover defaults: two more nodes, each given as long as Kamailio
// dispatcher set-ups usually give a destination (t_set_fr 2000) before
// ds_next_dst: room for the INVITE's first two retransmissions.
const (
	DefaultFailoverAttempts = 2
	DefaultFailoverTimeout  = 2 * time.Second
)

// Reasons a new dialog is retried on another node (metric label values).
const (
	failTimeout   = "timeout"   // no response other than 100 within the failover timeout
	failTransport = "transport" // the request could not be sent, or the transport failed
	fail408       = "408"       // the node answered 408
	fail5xx       = "5xx"       // the node answered 5xx
	failNodeDown  = "node_down" // the ring no longer holds the node healthy (suspect or probed down) while the call waits on it
	stopped       = "stopped"   // not a failure: the caller cancelled or the server transaction ended
)

// healthPoll is how often a call waiting on a node asks whether the ring
// still holds that node healthy: one snapshot read.
const healthPoll = 100 * time.Millisecond

// orphanLimit bounds how long a branch nobody relays any more is listened
// to (for a late provisional to CANCEL, or a late 2xx to end): Timer B.
var orphanLimit = sip.Timer_B

// failover is the retry plan of a new INVITE placed by admission: enough
// to send it to another node of the ring as the same call.
type failover struct {
	fo       Failoverer
	areq     admission.Request
	base     branchBase // the INVITE as built for the first node, before Record-Route and per-hop changes
	maxFwd   uint32     // its Max-Forwards (the first branch decrements that header in place: each branch gets its own)
	st       routeState // its Record-Route state; the node fields change per node
	left     int        // attempts left
	timeout  time.Duration
	tried    []string
	triedBuf [2]string // tried's first backing array
}

// planFailover prepares the retry of a new INVITE in fp (the caller's
// storage: newDialog's newCall); false, fp untouched, when failover is
// off. out must not have its Record-Route yet: every node gets its own.
func (p *Proxy) planFailover(fp *failover, req *sip.Request, areq admission.Request, out *sip.Request, st routeState) bool {
	fo, ok := p.admit.(Failoverer)
	if !ok || !req.IsInvite() || p.opts.FailoverAttempts <= 0 {
		return false
	}
	timeout := p.opts.FailoverTimeout
	if timeout <= 0 {
		timeout = DefaultFailoverTimeout
	}
	maxFwd := uint32(70)
	if mf := out.MaxForwards(); mf != nil {
		maxFwd = mf.Val()
	}
	*fp = failover{fo: fo, areq: areq, maxFwd: maxFwd, st: st, left: p.opts.FailoverAttempts,
		timeout: timeout}
	fp.base.keep(out)
	fp.triedBuf[0] = st.NodeName
	fp.tried = fp.triedBuf[:1] // in the plan's own allocation; a second failover grows it
	return true
}

// baseRoom is how many headers branchBase holds without an allocation of
// their own: an INVITE from sipp or a softphone has ten to fifteen.
const baseRoom = 16

// branchBase is what a failover branch is built from: the first branch's
// start line, header list (the header values shared with it, which
// nothing changes after parsing except the top Via and Max-Forwards, and
// those the first branch owns), body and addresses, kept in the plan's own
// allocation instead of a second request.
type branchBase struct {
	recipient sip.Uri
	version   string
	hdrs      []sip.Header
	hdrBuf    [baseRoom]sip.Header
	body      []byte
	transport string
	source    string
	laddr     sip.Addr
}

// keep takes out's fields; out goes on to the first node, but later
// changes to it (Record-Route and Via prepended, in a new list) do not
// reach the copy of its list.
func (b *branchBase) keep(out *sip.Request) {
	b.recipient, b.version = out.Recipient, out.SipVersion
	b.hdrs = append(b.hdrBuf[:0], out.Headers()...)
	b.body, b.transport, b.source, b.laddr = out.Body(), out.Transport(), out.Source(), out.Laddr
}

// request is a new INVITE for a branch, every part of it its own (as
// sipgo's Request.Clone builds one).
func (b *branchBase) request() *sip.Request {
	out := sip.NewRequest(sip.INVITE, *b.recipient.Clone())
	out.SipVersion = b.version
	for _, h := range b.hdrs {
		out.AppendHeader(sip.HeaderClone(h))
	}
	out.SetBody(slices.Clone(b.body))
	out.SetTransport(b.transport)
	out.SetSource(b.source)
	out.Laddr = b.laddr
	return out
}

// clientTx starts the client side of a forwarded request: a plain sipgo
// transaction, or for a new INVITE with a retry plan one that moves to the
// next node of the ring while the node fails it.
func (p *Proxy) clientTx(ctx context.Context, in *sip.Request, tx sip.ServerTransaction, out *sip.Request,
	c *fwdCall, canceller *cancelSender) (sip.ClientTransaction, error) {
	if c.info.failover == nil || canceller == nil {
		return p.client.TransactionRequest(ctx, out, keepAsBuilt)
	}
	f := &c.ftx
	*f = failoverTx{p: p, in: in, srv: tx, plan: c.info.failover, next: &c.next, info: &c.info, canceller: canceller,
		res: make(chan *sip.Response), done: make(chan struct{})}
	go f.run(out, c.next, c.info.node)
	return f, nil
}

// failoverTx is the client transaction forward relays from when a new
// INVITE may fail over. It sends the INVITE to one node at a time (a new
// branch each, the same Call-ID, body and server transaction) until a node
// gives a response other than 100 that is not 408 or 5xx, the budget is
// spent, or the caller cancels. Only the branch it settled on is relayed:
// an abandoned branch is terminated or cancelled, and a late answer on it
// never reaches the caller.
//
// When it moves to a new branch it writes that branch's node into
// forward's next and info. forward reads them while it handles a response,
// so the writes wait until forward is back at its select: forward calls
// Responses each time it enters it, which tells that it is done with what
// it was given (reads > delivered, under mu). The next delivery orders the
// writes before forward's next reads.
type failoverTx struct {
	p         *Proxy
	in        *sip.Request
	srv       sip.ServerTransaction
	plan      *failover
	next      *hop
	info      *fwdInfo
	canceller *cancelSender

	res  chan *sip.Response
	done chan struct{}

	mu        sync.Mutex
	err       error
	cur       sip.ClientTransaction // the branch relayed
	reads     int                   // times forward entered its select (called Responses)
	delivered int                   // responses forward took
	caughtUp  chan struct{}         // closed when reads passes delivered, for waitIdle
}

var _ sip.ClientTransaction = (*failoverTx)(nil)

// Responses is called by forward each time it enters its select.
func (f *failoverTx) Responses() <-chan *sip.Response {
	f.mu.Lock()
	f.reads++
	if f.caughtUp != nil && f.reads > f.delivered {
		close(f.caughtUp)
		f.caughtUp = nil
	}
	f.mu.Unlock()
	return f.res
}

// waitIdle waits until forward is done with every response it took (it is
// back at its select). False when it does not come back: it has ended, or
// it reads the channel in a way this does not see.
func (f *failoverTx) waitIdle() bool {
	f.mu.Lock()
	if f.reads > f.delivered {
		f.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	f.caughtUp = ch
	f.mu.Unlock()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-f.srv.Done():
	case <-t.C:
		f.p.log.Error().Str("call_id", callID(f.in)).Msg("failover: the relay loop did not come back; staying on the node")
	}
	return false
}

func (f *failoverTx) Done() <-chan struct{} { return f.done }

func (f *failoverTx) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// OnRetransmission is a no-op: every branch has the proxy's hook, which
// relays only the branch forward settled on (retransmitted2xx).
func (f *failoverTx) OnRetransmission(sip.FnTxResponse) bool { return true }

func (f *failoverTx) OnTerminate(sip.FnTxTerminate) bool { return false }

// Terminate ends the branch in use.
func (f *failoverTx) Terminate() {
	f.mu.Lock()
	cur := f.cur
	f.mu.Unlock()
	if cur != nil {
		cur.Terminate()
	}
}

func (f *failoverTx) fail(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
	close(f.done)
}

// send starts one branch and hooks its 2xx retransmissions: relayed only
// while it is the branch settled on.
func (f *failoverTx) send(out *sip.Request) (sip.ClientTransaction, error) {
	ctx, cancel := dialContext(f.info.txContext(f.srv), *f.next)
	br, err := f.p.client.TransactionRequest(ctx, out, keepAsBuilt)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", sip.ErrTransactionTransport, err)
	}
	f.mu.Lock()
	f.cur = br
	f.mu.Unlock()
	// A 2xx retransmission is relayed only for the branch settled on: the
	// one whose branch forward put in the finished table. The hook holds
	// nothing of f (the transaction outlives the call by Timer M).
	br.OnRetransmission(f.p.retrans)
	return br, nil
}

// run drives the branches; it owns them and ends when the call is settled.
func (f *failoverTx) run(out *sip.Request, h hop, node string) {
	// The plan, with its header list of the INVITE, is only needed until
	// the call is settled. It lies in newDialog's newCall, as f does:
	// cleared rather than dropped, so what it points to (the INVITE's
	// headers) goes even while f is still referenced. (The branch's 2xx
	// hook is the proxy's retransmitted2xx and holds nothing of f.)
	defer func() { *f.plan, f.plan = failover{}, nil }()
	for {
		br, err := f.send(out)
		var first *sip.Response
		reason, gotProv := failTransport, false
		if err == nil {
			first, reason, gotProv = f.await(br, node)
			switch reason {
			case "":
				f.pipe(br, h, first)
				return
			case stopped:
				f.orphan(br, h)
				return
			}
			if reason == failTransport {
				err = br.Err()
			}
		}
		nextOut, nextHop, nextNode, ok := f.nextBranch(reason, node)
		if !ok {
			switch {
			case first != nil: // the node's own 408 or 5xx goes to the caller
				f.pipe(br, h, first)
			case reason == failTimeout || reason == failNodeDown: // the last node may still answer
				f.pipe(br, h, nil)
			default:
				f.fail(err)
			}
			return
		}
		f.p.metrics.failovers.WithLabelValues(reason).Inc()
		ev := f.p.log.Warn().Str("call_id", callID(f.in)).Str("node", node).Str("next_node", nextNode).
			Str("reason", reason).Int("attempt", len(f.plan.tried)-1)
		if first != nil {
			ev.Int("code", first.StatusCode)
		}
		ev.Msg("new call failed over to the next node of the ring")
		if br != nil && (reason == failTimeout || reason == failNodeDown) {
			f.abandon(br, out, h, gotProv)
		}
		out, h, node = nextOut, nextHop, nextNode
	}
}

// await relays one branch until it settles (reason "") or fails. Before
// any response other than 100, the branch fails on the failover timeout, a
// transport error, or a 408 or 5xx answer. After a provisional other than
// 100 has been relayed, the call is the node's: only the node's death
// moves it on (the ring no longer holds it healthy: suspect after another
// call's failure, or down by probes), as a forking proxy's next branch;
// the caller's early dialog is then simply never confirmed. Provisional
// responses are passed up on the way, so a CANCEL can follow them.
func (f *failoverTx) await(br sip.ClientTransaction, node string) (res *sip.Response, reason string, gotProv bool) {
	// One timer serves both the failover timeout and the health poll
	// (a timer and a ticker were six allocations per call set-up).
	deadline := time.Now().Add(f.plan.timeout)
	armed := true // the failover timeout still applies
	timer := f.p.timers.get(min(healthPoll, f.plan.timeout))
	defer f.p.timers.put(timer)
	early := false
	for {
		select {
		case res := <-br.Responses():
			if res.IsProvisional() {
				gotProv = true
				if res.StatusCode != 100 {
					early, armed = true, false
				}
				if !f.deliver(res) {
					return nil, stopped, gotProv
				}
				continue
			}
			if r := failureReason(res.StatusCode); r != "" && !early && f.canRetry() {
				return res, r, gotProv
			}
			return res, "", gotProv
		case <-br.Done():
			if errors.Is(br.Err(), sip.ErrTransactionTransport) {
				return nil, failTransport, gotProv
			}
			return nil, failTimeout, gotProv
		case <-timer.C:
			left := time.Until(deadline)
			if armed && left <= 0 {
				if f.canRetry() {
					return nil, failTimeout, gotProv
				}
				armed = false // the last attempt: wait for what it answers
			}
			if !f.plan.fo.Healthy(node) && f.canRetry() {
				return nil, failNodeDown, gotProv
			}
			next := healthPoll
			if armed {
				next = min(next, left)
			}
			timer.Reset(next)
		case <-f.srv.Done():
			return nil, stopped, gotProv
		}
	}
}

// failureReason says whether a final answer sends the call to another
// node: 408 and 5xx do (the node could not serve it); any other answer,
// 486 Busy or 404 among them, is the caller's.
func failureReason(code int) string {
	switch {
	case code == 408:
		return fail408
	case code >= 500 && code < 600:
		return fail5xx
	}
	return ""
}

// canRetry reports whether another node may still be tried.
func (f *failoverTx) canRetry() bool {
	if f.plan.left <= 0 || f.canceller.cancelled() {
		return false
	}
	select {
	case <-f.srv.Done():
		return false
	default:
		return true
	}
}

// nextBranch asks admission for the next node (marking the failed one
// suspect) and builds the INVITE for it. ok is false when no node is left
// or the caller has cancelled meanwhile.
func (f *failoverTx) nextBranch(reason, node string) (*sip.Request, hop, string, bool) {
	if reason == stopped || !f.canRetry() || !f.waitIdle() {
		return nil, hop{}, "", false
	}
	ctx, cancel := context.WithTimeout(txContext(f.srv), connectTimeout)
	v := f.plan.fo.Failover(ctx, f.plan.areq, node, f.plan.tried)
	cancel()
	if !v.Admit || slices.Contains(f.plan.tried, v.Node.Name) {
		f.p.log.Warn().Str("call_id", callID(f.in)).Str("node", node).Str("reason", reason).
			Strs("tried", f.plan.tried).Msg("new call failed and no other node is left to try")
		return nil, hop{}, "", false
	}
	f.plan.left--
	f.plan.tried = append(f.plan.tried, v.Node.Name)
	st := f.plan.st
	st.NodeName, st.NodeAddr, st.NodeTransport = v.Node.Name, v.Node.Addr, transportOrUDP(v.Node.Transport)
	out := f.plan.base.request()
	mf := sip.MaxForwardsHeader(f.plan.maxFwd)
	out.ReplaceHeader(&mf)
	out.Recipient.Host, out.Recipient.Port = splitHostPort(v.Node.Addr)
	rr := f.p.recordRoute(f.in, st)
	h := hop{addr: v.Node.Addr, transport: st.NodeTransport}
	var br [branchRoom]byte
	f.p.prepareForward(f.in, out, h, f.p.branch(br[:0], f.in), rr.list())
	if !f.canceller.retarget(out) {
		return nil, hop{}, "", false // cancelled just now: nothing new is started
	}
	f.info.node, *f.next = v.Node.Name, h
	return out, h, v.Node.Name, true
}

// deliver passes a response to forward; false when nobody will take it
// any more (the server transaction ended: cancelled or gone).
func (f *failoverTx) deliver(res *sip.Response) bool {
	select {
	case f.res <- res:
		f.mu.Lock()
		f.delivered++
		f.mu.Unlock()
		return true
	case <-f.srv.Done():
		return false
	}
}

// pipe relays the settled branch until its final response.
func (f *failoverTx) pipe(br sip.ClientTransaction, h hop, first *sip.Response) {
	res := first
	for {
		if res != nil {
			// Read before delivering: forward may release a 2xx it relayed.
			provisional := res.IsProvisional()
			if !f.deliver(res) {
				if res.IsSuccess() {
					f.p.hangUpLate(f.in, res, h, "answered after the caller left")
				} else if res.IsProvisional() {
					f.orphan(br, h)
				}
				return
			}
			if !provisional {
				return
			}
		}
		select {
		case res = <-br.Responses():
		case <-br.Done():
			f.fail(br.Err())
			return
		}
	}
}

// orphan listens to a branch whose caller is gone (CANCEL, or the server
// transaction ended): a provisional lets the pending CANCEL go out, a 2xx
// is ended at once. Bounded by orphanLimit.
func (f *failoverTx) orphan(br sip.ClientTransaction, h hop) {
	f.drainBranch(br, h, f.canceller.provisional, "answered after the caller left")
}

// drainBranch listens to a branch nothing is relayed from any more, for at
// most orphanLimit: each provisional calls onProvisional (may be nil), a
// 2xx is ended at once with why as the BYE's reason.
func (f *failoverTx) drainBranch(br sip.ClientTransaction, h hop, onProvisional func(), why string) {
	limit := time.NewTimer(orphanLimit)
	defer limit.Stop()
	for {
		select {
		case res := <-br.Responses():
			if res.IsProvisional() {
				if onProvisional != nil {
					onProvisional()
				}
				continue
			}
			if res.IsSuccess() {
				f.p.hangUpLate(f.in, res, h, why)
			}
			return
		case <-br.Done():
			return
		case <-limit.C:
			br.Terminate()
			return
		}
	}
}

// abandon ends a branch that timed out: one that said nothing at all is
// terminated (no more retransmissions to a dead node); one that sent 100
// is cancelled (RFC 3261 §9.1) and listened to, so a 2xx that crosses the
// CANCEL is ended rather than left unanswered. Nothing from it is relayed.
func (f *failoverTx) abandon(br sip.ClientTransaction, out *sip.Request, h hop, gotProv bool) {
	if !gotProv {
		br.Terminate()
		return
	}
	cancel := cancelFor(out)
	f.p.spawn(f.p.background(), func(ctx context.Context) {
		// Serve's context: the abandoned branch is cancelled whatever the caller does.
		ctx, done := context.WithTimeout(ctx, connectTimeout)
		defer done()
		if _, err := f.p.client.Do(ctx, cancel, keepAsBuilt); err != nil {
			if ctx.Err() == nil { // not sent at all (a timeout is the dead node's silence)
				f.p.notSent("CANCEL of an abandoned branch", callID(f.in), 0, err)
				return
			}
			f.p.log.Debug().Err(err).Str("call_id", callID(f.in)).Str("to", h.addr).Msg("CANCEL of an abandoned branch failed")
		}
	})
	go f.drainBranch(br, h, nil, "answered after failover")
}

// hangUpLate ends a dialog a node set up on a branch nobody relays: ACK
// the 2xx (so the node stops retransmitting it) and BYE. The caller never
// sees it.
func (p *Proxy) hangUpLate(in *sip.Request, res *sip.Response, h hop, why string) {
	p.metrics.failoverLate.Inc()
	dl := p.newDialogRecord(in, res, fwdInfo{}, hop{}, h)
	p.log.Warn().Str("call_id", dl.callID).Str("to", h.addr).Int("code", res.StatusCode).Str("why", why).
		Msg("2xx on a branch not relayed: ACK and BYE to the node")
	target, ok := contactURI(dl.nodeContact) // contact.go
	if dl.to == nil || dl.from == nil || !ok || target.Host == "" {
		return
	}
	ack := sip.NewRequest(sip.ACK, target)
	ack.AppendHeader(sip.HeaderClone(dl.from))
	ack.AppendHeader(sip.HeaderClone(dl.to))
	id := sip.CallIDHeader(dl.callID)
	ack.AppendHeader(&id)
	seq := uint32(1)
	if cs := in.CSeq(); cs != nil {
		seq = cs.SeqNo
	}
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: sip.ACK})
	ack.SetBody(nil)
	p.prepareForward(ack, ack, h, p.branch(nil, ack), nil)
	p.leaveFrom(ack, h, dl.nodeAt)
	if err := p.client.WriteRequest(ack, keepAsBuilt); err != nil {
		p.notSent("ACK of a late 2xx", dl.callID, 0, err)
	}
	// Outlives the branch and the caller's transaction.
	p.spawn(p.background(), func(ctx context.Context) { p.sendBye(ctx, dl, false, "failover") })
}
