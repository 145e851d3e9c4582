package proxy

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/nodeauth"
	"github.com/sipedge/sipedge/internal/recent"
)

// hdrAuth carries a node's proof (internal/nodeauth): an HMAC with the node
// secret over the request's identity, target, X-Sipedge-* values and a
// timestamp. It is removed with the other X-Sipedge-* headers.
const hdrAuth = nodeauth.Header

// nodeAuth holds what checking a proof needs; its secrets can be swapped at
// run time.
type nodeAuth struct {
	secrets *atomic.Pointer[[]string]
	window  time.Duration
	now     func() time.Time
	log     zerolog.Logger // sampled: a forger must not flood the log
	seen    *replayCache
}

// replayCache remembers the proofs accepted within the window, so a
// captured request replayed (from a forged source) while its timestamp is
// still valid is refused. Only valid proofs enter it: its size is bounded
// by the rate of genuine node calls. Per instance: a replay to another
// instance is caught by the window alone.
type replayCache struct {
	mu   sync.Mutex
	seen recent.Set // proof header values, each kept while it is valid
}

// fresh records v and reports whether it was not seen before.
func (c *replayCache) fresh(v string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen.Has(v) {
		return false
	}
	c.seen.Add(v, now)
	return true
}

// initTrust installs the route secrets (current first) and the node
// secrets of p.opts; New calls it.
func (p *Proxy) initTrust() error {
	p.signer = makeRouteSigner()
	if err := p.signer.set(append([]string{p.opts.RouteSecret}, p.opts.OldRouteSecrets...)); err != nil {
		return fmt.Errorf("proxy: route secrets: %w", err)
	}
	window := p.opts.NodeAuthWindow
	if window <= 0 {
		window = nodeauth.DefaultWindow
	}
	p.auth = nodeAuth{secrets: &atomic.Pointer[[]string]{}, window: window, now: time.Now,
		log: p.log.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second}), seen: &replayCache{seen: recent.New(2 * window)}}
	p.SetNodeSecrets(p.opts.NodeSecrets...)
	return nil
}

// SetNodeSecrets replaces the keys node proofs are checked with (the
// current one first; the previous one during a rotation).
func (p *Proxy) SetNodeSecrets(secrets ...string) {
	var keep []string
	for _, s := range secrets {
		if s != "" {
			keep = append(keep, s)
		}
	}
	p.auth.secrets.Store(&keep)
}

// hasTrusted reports whether m carries any X-Sipedge-* header a source
// needs trust for.
func hasTrusted(m interface{ Headers() []sip.Header }) bool { return firstTrusted(m) != nil }

// trustNew decides whether the X-Sipedge-* headers of a new dialog's
// request are believed, and which node sent it. The source address must be
// a node's or lie in trusted_networks (TrustFunc), and there must be proof
// beyond that address, which a raw socket forges on UDP:
//   - a valid X-Sipedge-Auth (any transport), or
//   - a connection-oriented transport (TCP) with no X-Sipedge-Auth at all:
//     the handshake cannot be completed from a forged address.
//
// A proof that is present but wrong is refused on every transport.
// Requests without X-Sipedge-* headers need no proof: there is nothing
// to believe.
func (p *Proxy) trustNew(req *sip.Request) (node string, trusted bool) {
	if !hasTrusted(req) {
		return p.trust(req)
	}
	node, ok := p.trust(req)
	if !ok {
		return "", false
	}
	if req.GetHeader(hdrAuth) == nil && lower(req.Transport()) != "udp" {
		return node, true
	}
	now := p.auth.now()
	err := nodeauth.Verify(req, *p.auth.secrets.Load(), now, p.auth.window)
	if err == nil && !p.auth.seen.fresh(req.GetHeader(hdrAuth).Value(), now) {
		err = errReplayed
	}
	if err != nil {
		reason := nodeauth.Reason(err)
		if errors.Is(err, errReplayed) {
			reason = "replayed"
		}
		p.metrics.nodeAuthFailures.WithLabelValues(reason).Inc()
		p.auth.log.Warn().Str("call_id", callID(req)).Str("source", req.Source()).Str("node", node).
			Str("transport", req.Transport()).Str("reason", reason).
			Msg("X-Sipedge-* headers from a trusted address without valid proof: not believed")
		return "", false
	}
	// The proof is for sipedge alone: a node or callee never sees it.
	for h := req.GetHeader(hdrAuth); h != nil && req.RemoveHeader(h.Name()); h = req.GetHeader(hdrAuth) {
	}
	return node, true
}

// refuseNodeCall answers a node call (an INVITE with X-Sipedge-Conference)
// that is not proven to come from a media node: 403, and nothing is sent
// anywhere else.
func (p *Proxy) refuseNodeCall(req *sip.Request, tx sip.ServerTransaction, reason string) {
	p.metrics.nodeCallsRefused.WithLabelValues(reason).Inc()
	p.auth.log.Warn().Str("call_id", callID(req)).Str("source", req.Source()).Str("reason", reason).
		Str("target", req.Recipient.Host).Msg("node call refused")
	p.reply(tx, req, 403, "Forbidden (node calls need a media node's X-Sipedge-Auth)")
}

// errReplayed is a valid proof seen before within its window.
var errReplayed = errors.New("X-Sipedge-Auth already used")
