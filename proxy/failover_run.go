package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/emiago/sipgo/sip"
)

// failoverRun is a new INVITE's retry plan at work in forward's relay loop
// (forwardCall): the node of the branch relayed and what that branch has
// said so far. forward reads the branch's responses itself; when the
// branch fails, moveOn sends the INVITE to the next node of the ring as the
// same call on a new branch (same Call-ID, body and server transaction),
// and the failed branch is terminated, or cancelled and drained, nothing
// of it relayed.
//
// It runs on forward's goroutine: a response goes from sipgo's client
// transaction straight to the loop that relays it, with no goroutine or
// channel of its own per call. It lives in the call's fwdCall.
//
// Before any response other than 100, a branch fails on the failover
// timeout, a transport error, or a 408 or 5xx answer. After a provisional
// other than 100 has been relayed, the call is the node's: only the node's
// death moves it on (the ring no longer holds it healthy: suspect after
// another call's failure, or down by probes), as a forking proxy's next
// branch; the caller's early dialog is then simply never confirmed.
type failoverRun struct {
	p         *Proxy
	in        *sip.Request
	srv       sip.ServerTransaction
	plan      *failover
	canceller *cancelSender

	node     string      // the node of the branch relayed
	deadline time.Time   // that branch's failover timeout
	armed    bool        // the failover timeout still applies
	early    bool        // a provisional other than 100 came: only the node's death moves the call on
	gotProv  bool        // a provisional came: the node may be sent a CANCEL
	timer    *time.Timer // the failover timeout and the health poll, one timer (a timer and a ticker were six allocations per set-up)
}

// liveBranch is the branch forward relays from: the request sent, its
// client transaction (nil while none could be sent) and its place in the
// response order (respseq.go).
type liveBranch struct {
	out  *sip.Request
	tx   sip.ClientTransaction
	line *respLine
}

// startFailover puts c's retry plan to work on the branch just sent to
// c.info.node; nil when the call has none (the methods of a nil run do
// nothing).
func (p *Proxy) startFailover(c *fwdCall, in *sip.Request, tx sip.ServerTransaction, canceller *cancelSender) *failoverRun {
	if c.info.failover == nil || canceller == nil {
		return nil
	}
	f := &c.fo
	*f = failoverRun{p: p, in: in, srv: tx, plan: c.info.failover, canceller: canceller}
	f.watch(c.info.node)
	return f
}

// watch starts the failover clock of a new branch to node.
func (f *failoverRun) watch(node string) {
	f.node, f.armed, f.early, f.gotProv = node, true, false, false
	f.deadline = time.Now().Add(f.plan.timeout)
	d := min(healthPoll, f.plan.timeout)
	if f.timer == nil {
		f.timer = f.p.timers.get(d)
		return
	}
	f.timer.Reset(d)
}

// stop ends the run: the call is settled, or no node is left to move to.
// The timer goes back to the pool and the plan, with its header list of
// the INVITE, is cleared (it lies in newDialog's newCall, which the
// caller's CANCEL callback may keep longer). A stopped run does nothing.
func (f *failoverRun) stop() {
	if f == nil {
		return
	}
	if f.timer != nil {
		f.p.timers.put(f.timer)
		f.timer = nil
	}
	if f.plan != nil {
		*f.plan, f.plan = failover{}, nil
	}
}

// tick is the channel of the run's timer; nil (never ready) without one.
func (f *failoverRun) tick() <-chan time.Time {
	if f == nil || f.timer == nil {
		return nil
	}
	return f.timer.C
}

// provisional notes a provisional response of the branch relayed.
func (f *failoverRun) provisional(res *sip.Response) {
	if f == nil || f.plan == nil {
		return
	}
	f.gotProv = true
	if res.StatusCode != 100 {
		f.early, f.armed = true, false
	}
}

// retryable is why a final response of the branch relayed moves the call
// on ("" when it goes to the caller).
func (f *failoverRun) retryable(res *sip.Response) string {
	if f == nil || f.plan == nil {
		return ""
	}
	if r := failureReason(res.StatusCode); r != "" && !f.early && f.canRetry() {
		return r
	}
	return ""
}

// ended is why the branch's transaction ending without a final response
// moves the call on.
func (f *failoverRun) ended(br sip.ClientTransaction) string {
	if f == nil || f.plan == nil {
		return ""
	}
	if errors.Is(br.Err(), sip.ErrTransactionTransport) {
		return failTransport
	}
	return failTimeout
}

// fired handles the timer: why the call moves on ("" when it stays, the
// timer set again). On the last attempt the failover timeout no longer
// applies: the call waits for what the node answers.
func (f *failoverRun) fired() string {
	if f == nil || f.plan == nil {
		return ""
	}
	left := time.Until(f.deadline)
	if f.armed && left <= 0 {
		if f.canRetry() {
			return failTimeout
		}
		f.armed = false
	}
	if !f.plan.fo.Healthy(f.node) && f.canRetry() {
		return failNodeDown
	}
	next := healthPoll
	if f.armed {
		next = min(next, left)
	}
	f.timer.Reset(next)
	return ""
}

// canRetry reports whether another node may still be tried.
func (f *failoverRun) canRetry() bool {
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

// moveOn sends the call to the next node after its branch b failed for
// reason (first is the node's 408 or 5xx; b.tx is nil when sendErr kept
// the branch from being sent at all). moved: b is the new branch, c's hop
// and node are its. Not moved, with err: the last branch could not be
// sent and no node is left (the caller gets 503). Not moved, no error: no
// node is left and b stays the call's (its own answer goes to the caller,
// or the last node may still answer).
func (f *failoverRun) moveOn(c *fwdCall, b *liveBranch, reason string, first *sip.Response, sendErr error) (moved bool, err error) {
	if f == nil || f.plan == nil {
		return false, sendErr
	}
	for {
		prev := c.next
		out, ok := f.nextBranch(c, reason)
		if !ok {
			f.stop()
			if sendErr != nil {
				return false, fmt.Errorf("%w: %w", sip.ErrTransactionTransport, sendErr)
			}
			return false, nil
		}
		f.p.metrics.failovers.WithLabelValues(reason).Inc()
		ev := f.p.log.Warn().Str("call_id", callID(f.in)).Str("node", f.node).Str("next_node", c.info.node).
			Str("reason", reason).Int("attempt", len(f.plan.tried)-1)
		if first != nil {
			ev.Int("code", first.StatusCode)
		}
		ev.Msg("new call failed over to the next node of the ring")
		if b.tx != nil && (reason == failTimeout || reason == failNodeDown) {
			f.abandon(b.tx, b.out, prev, f.gotProv)
		}
		f.p.rseq.closeLine(b.line)
		b.out, b.line = out, f.p.rseq.openLine(ourINVITEBranch(out)) // before the send: a response may come at once
		b.tx, sendErr = f.p.sendBranch(c, f.srv, out)
		f.watch(c.info.node)
		if sendErr == nil {
			return true, nil
		}
		reason, first = failTransport, nil
	}
}

// nextBranch asks admission for the next node (marking the failed one
// suspect) and builds the INVITE for it; c's hop and node become the new
// node's. ok is false when no node is left or the caller has cancelled
// meanwhile.
func (f *failoverRun) nextBranch(c *fwdCall, reason string) (*sip.Request, bool) {
	if !f.canRetry() {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(txContext(f.srv), connectTimeout)
	v := f.plan.fo.Failover(ctx, f.plan.areq, f.node, f.plan.tried)
	cancel()
	if !v.Admit || slices.Contains(f.plan.tried, v.Node.Name) {
		f.p.log.Warn().Str("call_id", callID(f.in)).Str("node", f.node).Str("reason", reason).
			Strs("tried", f.plan.tried).Msg("new call failed and no other node is left to try")
		return nil, false
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
		return nil, false // cancelled just now: nothing new is started
	}
	c.info.node, c.next = v.Node.Name, h
	return out, true
}

// abandon ends a branch that timed out: one that said nothing at all is
// terminated (no more retransmissions to a dead node); one that sent 100
// is cancelled (RFC 3261 §9.1) and listened to, so a 2xx that crosses the
// CANCEL is ended rather than left unanswered. Nothing from it is relayed.
func (f *failoverRun) abandon(br sip.ClientTransaction, out *sip.Request, h hop, gotProv bool) {
	if !gotProv {
		br.Terminate()
		return
	}
	p, in, cancel := f.p, f.in, cancelFor(out)
	p.spawn(p.background(), func(ctx context.Context) {
		// Serve's context: the abandoned branch is cancelled whatever the caller does.
		ctx, done := context.WithTimeout(ctx, connectTimeout)
		defer done()
		if _, err := p.client.Do(ctx, cancel, keepAsBuilt); err != nil {
			if ctx.Err() == nil { // not sent at all (a timeout is the dead node's silence)
				p.notSent("CANCEL of an abandoned branch", callID(in), 0, err)
				return
			}
			p.log.Debug().Err(err).Str("call_id", callID(in)).Str("to", h.addr).Msg("CANCEL of an abandoned branch failed")
		}
	})
	p.spawn(p.background(), func(ctx context.Context) {
		p.drainBranch(ctx, in, br, h, nil, "answered after failover")
	})
}

// orphan listens to the branch of a call whose caller is gone (CANCEL, or
// the server transaction ended): a provisional lets the pending CANCEL go
// out, a 2xx is ended at once. Bounded by orphanLimit.
func (p *Proxy) orphan(in *sip.Request, br sip.ClientTransaction, h hop, canceller *cancelSender) {
	p.spawn(p.background(), func(ctx context.Context) {
		p.drainBranch(ctx, in, br, h, canceller.provisional, "answered after the caller left")
	})
}

// drainBranch listens to a branch nothing is relayed from any more, for at
// most orphanLimit (or until the proxy stops): each provisional calls
// onProvisional (may be nil), a 2xx is ended at once with why as the BYE's
// reason.
func (p *Proxy) drainBranch(ctx context.Context, in *sip.Request, br sip.ClientTransaction, h hop, onProvisional func(), why string) {
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
				p.hangUpLate(in, res, h, why)
			}
			return
		case <-br.Done():
			return
		case <-limit.C:
			br.Terminate()
			return
		case <-ctx.Done():
			br.Terminate()
			return
		}
	}
}
