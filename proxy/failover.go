package proxy

import (
	"context"
	"slices"
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
