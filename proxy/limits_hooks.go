package proxy

import (
	"bytes"
	"context"
	"net/netip"
	rtmetrics "runtime/metrics"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/internal/logging"
	"github.com/sipedge/sipedge/media"
)

// The proxy's side of the flood limits: where limiter decisions meet SIP.

// portUser is what the limits need of the media manager beyond Media:
// the relay ports of one call and of the whole range.
type portUser interface {
	CallPorts(callID string) int
	PortUsage() (inUse, capacity int)
}

var _ portUser = (*media.Manager)(nil)

// initLimits builds the limiter and its metrics (called by New).
func (p *Proxy) initLimits(reg prometheus.Registerer) error {
	lm, err := newLimitMetrics(reg)
	if err != nil {
		return err
	}
	p.limits = newLimiter(p.opts.Limits)
	p.limitMetrics = lm
	for r := limitReason(1); r < numLimitReasons; r++ {
		p.limitLogs[r] = logging.NewSampled(p.log)
	}
	p.noAckLog = logging.NewSampled(p.log)
	return nil
}

var invitePrefix = []byte("INVITE ")

// floodFilter is the hard threshold, applied to each UDP datagram before
// sipgo parses it or creates a transaction: INVITEs from a source above
// its drop rate are dropped unanswered and counted. TCP is checked per
// message in limitNewDialog (a TCP read is not a message).
func (p *Proxy) floodFilter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	if !p.limits.perSource() || !bytes.HasPrefix(data, invitePrefix) {
		return data, nil
	}
	ua, ok := udpAddrOf(info.RemoteAddr) // srcaddr.go
	if !ok {
		return data, nil
	}
	ap := ua.AddrPort()
	if p.exempt(ap) {
		return data, nil
	}
	if p.limits.dropDatagram(ap.Addr(), p.limits.opt.Clock()) {
		p.limitMetrics.limited[limitSourceDrop].Inc()
		if ev := p.limitLogs[limitSourceDrop].Info(); ev != nil {
			ev.Str("source", ap.Addr().String()).Str("reason", limitSourceDrop.String()).
				Msg("INVITE dropped unanswered: source above its hard rate")
		}
		return nil, nil
	}
	return data, nil
}

// exempt reports whether a source is a media node or in trusted_networks:
// the per-source limits do not apply to it.
func (p *Proxy) exempt(src netip.AddrPort) bool {
	_, trusted := p.trustAddrPort(src)
	return trusted
}

// limitNewDialog runs in newDialog before any state is created (probes of
// sipedge itself are answered before it):
// it answers 503 with Retry-After (or, above the hard threshold, drops)
// a new dialog a flood limit forbids, and reports true when it did. An
// INVITE it lets through is counted as half-open until newDialogDone.
func (p *Proxy) limitNewDialog(req *sip.Request, tx sip.ServerTransaction) bool {
	if p.limits == nil {
		return false
	}
	invite := req.IsInvite()
	src, why := p.limitRefusal(req)
	if why == limitNone {
		if invite {
			p.limits.begin(callID(req), src)
			p.limitMetrics.halfOpen.Set(float64(p.limits.halfOpen.Load()))
		}
		return false
	}
	if why == limitSourceDrop {
		tx.Terminate() // no answer: the source is flooding
		return true
	}
	res := sip.NewResponseFromRequest(req, 503, "Service Unavailable ("+why.String()+")", nil)
	if p.limits.opt.RetryAfter > 0 {
		res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(p.limits.opt.RetryAfter)))
	}
	p.respond(tx, res)
	return true
}

// limitRefusal checks the flood limits for a new dialog of req (also the
// stateless reject path's check, stateless.go): a refusal is counted and
// logged (sampled) and its reason returned; limitNone and the source
// charged otherwise.
func (p *Proxy) limitRefusal(req *sip.Request) (*source, limitReason) {
	ap, _ := netip.ParseAddrPort(req.Source())
	return p.limitRefusalOf(req.Method, ap, req.Transport() == "UDP", callID(req))
}

// limitRefusalOf is limitRefusal from the request's facts.
func (p *Proxy) limitRefusalOf(method sip.RequestMethod, ap netip.AddrPort, udp bool, id string) (*source, limitReason) {
	invite := method == sip.INVITE
	g := globalUse{dialogs: p.dialogs.Len()}
	if pu, ok := p.media.(portUser); ok && invite {
		g.portsInUse, g.portsCap = pu.PortUsage()
	}
	src, why := p.limits.check(ap.Addr(), p.exempt(ap), invite, !(invite && udp), p.limits.opt.Clock(), g)
	if why == limitNone {
		return src, why
	}
	p.limitMetrics.limited[why].Inc()
	if ev := p.limitLogs[why].Info(); ev != nil {
		ev.Str("call_id", id).Str("method", string(method)).Str("source", ap.Addr().String()).
			Str("reason", why.String()).Msg("new dialog refused by a flood limit")
	}
	return src, why
}

// limitPlacement is inDialogByPlacement's hook. An INVITE there (a UA
// that ignores Record-Route, or anyone adding a To tag) whose Call-ID has
// no media here opens relay ports like a new call: it passes the same
// limits, its ports are charged to its source (limitPortsOpened), and
// placementDone frees them unless it was answered 2xx. The transaction
// returned records the final status; refused means it was answered.
func (p *Proxy) limitPlacement(req *sip.Request, tx sip.ServerTransaction) (sip.ServerTransaction, bool) {
	pu, ok := p.media.(portUser)
	if !ok || !req.IsInvite() || !hasSDP(req) || pu.CallPorts(callID(req)) > 0 {
		return tx, false
	}
	if p.limitNewDialog(req, tx) {
		return tx, true
	}
	return &placementTx{ServerTransaction: tx}, false
}

// placementTx is a server transaction that remembers its final status.
type placementTx struct {
	sip.ServerTransaction
	code atomic.Int32
}

func (t *placementTx) Respond(res *sip.Response) error {
	if res.StatusCode >= 200 {
		t.code.CompareAndSwap(0, int32(res.StatusCode))
	}
	return t.ServerTransaction.Respond(res)
}

// placementDone ends what limitPlacement began: not answered 2xx (a
// forged or stale "in-dialog" INVITE the node refused), the media it
// opened is freed at once; answered, it waits for its ACK like a new call.
func (p *Proxy) placementDone(req *sip.Request, tx sip.ServerTransaction) {
	pt, ok := tx.(*placementTx)
	if !ok {
		return
	}
	id := callID(req)
	answered := pt.code.Load()/100 == 2
	p.limits.settle(id, answered, p.limits.opt.Clock())
	if !answered {
		p.mediaEnded(id)
	}
	p.limitMetrics.halfOpen.Set(float64(p.limits.halfOpen.Load()))
}

// newDialogDone runs when newDialog returns: an INVITE's transaction is
// over. Answered 2xx, the dialog stays half-open until its ACK or Timer H.
func (p *Proxy) newDialogDone(req *sip.Request) {
	if p.limits == nil || !req.IsInvite() {
		return
	}
	id := callID(req)
	p.limits.settle(id, p.dialogs.HasCall(id), p.limits.opt.Clock())
	p.limitMetrics.halfOpen.Set(float64(p.limits.halfOpen.Load()))
}

// limitAcked is forwardAck's hook: the 2xx of id is acknowledged.
func (p *Proxy) limitAcked(req *sip.Request) {
	if p.limits != nil {
		p.limits.acked(callID(req))
	}
}

// limitPortsOpened charges the relay ports a new call just opened to its
// source; limitPortsFreed gives them back (every path that frees media).
func (p *Proxy) limitPortsOpened(id string) {
	if pu, ok := p.media.(portUser); ok && p.limits != nil {
		p.limits.chargePorts(id, pu.CallPorts(id))
	}
}

func (p *Proxy) limitPortsFreed(id string) {
	if p.limits != nil {
		p.limits.freePorts(id)
	}
}

// runLimits owns the limits' timers until ctx ends: Timer H every 250 ms,
// the memory sample every 250 ms, idle sources and lost ports every 10 s.
func (p *Proxy) runLimits(ctx context.Context) {
	if p.limits == nil {
		return
	}
	// Memory the runtime holds from the OS: close to RSS, and steady
	// across GC cycles (the live heap alone swings by its GOGC headroom).
	sample := []rtmetrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	readMemory := func() {
		rtmetrics.Read(sample)
		if sample[0].Value.Kind() == rtmetrics.KindUint64 && sample[1].Value.Kind() == rtmetrics.KindUint64 {
			p.limits.memory.Store(sample[0].Value.Uint64() - sample[1].Value.Uint64())
		}
	}
	readMemory() // before the first tick: the limit holds from the first request
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var lastSweep time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := p.limits.opt.Clock()
		readMemory()
		if ids := p.limits.expired(now); len(ids) > 0 {
			p.endUnacked(ctx, ids)
		}
		p.limitMetrics.halfOpen.Set(float64(p.limits.halfOpen.Load()))
		if now.Sub(lastSweep) >= 10*time.Second {
			lastSweep = now
			p.limitMetrics.sources.Set(float64(p.limits.sweep(now)))
			if pu, ok := p.media.(portUser); ok {
				p.limits.reconcile(func(id string) bool { return pu.CallPorts(id) > 0 })
			}
		}
	}
}

// endUnacked ends calls answered 2xx and never ACKed (Timer H): BYE to
// both legs, relay ports freed, participant gone. One pass over the
// dialogs for all of them: a flood expires many at once.
func (p *Proxy) endUnacked(ctx context.Context, ids []string) {
	held := make(map[string]bool, len(ids))
	for _, id := range ids {
		p.limitMetrics.ackTimeouts.Inc()
		if ev := p.noAckLog.Info(); ev != nil {
			ev.Str("call_id", id).Stringer("after", p.limits.opt.AckTimeout).Msg("2xx never ACKed: call ended (Timer H)")
		}
		if !p.dialogs.HasCall(id) {
			p.mediaEnded(id) // ended meanwhile, or never a dialog here: free what is left
			continue
		}
		held[id] = true
	}
	if len(held) > 0 {
		p.EndDialogs(ctx, func(d Dialog) bool { return held[d.CallID] }, "ACK timeout")
	}
}
