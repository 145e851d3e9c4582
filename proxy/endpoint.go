package proxy

import "github.com/sipedge/sipedge/admission"

// Endpoint is the proxy's SIP stack before the proxy: listeners bound,
// user agent, server and client made, dialog set empty, no traffic
// served. It lets the daemon build its parts in dependency order: the node
// prober (the ring watcher needs it) and the dialog set (the counts
// ledger reads it) exist before the admitter, which needs both and which
// the proxy needs (internal/app).
type Endpoint struct{ p *Proxy }

// Pinger is the node prober on this endpoint's SIP client.
func (e *Endpoint) Pinger() Pinger { return Pinger{p: e.p} }

// Dialogs is the dialog set the counts are derived from. Its EndNoted
// reports to the admitter given to Proxy: call it only once Proxy
// returned (the ledger calls it from Run).
func (e *Endpoint) Dialogs() admission.Holder { return e.p }

// Proxy completes the endpoint into the proxy with the admitter of new
// dialogs and the trust check of X-Sipedge-* senders (nil trusts nobody).
// Call it once, before Serve.
func (e *Endpoint) Proxy(admit Admitter, trust TrustFunc) *Proxy {
	p := e.p
	p.admit, p.opts.Trust = admit, trust
	p.initStateless(admit)
	return p
}

// Close closes the listeners and the user agent of an endpoint whose proxy
// never served (a part built after it failed); Serve closes them itself.
func (e *Endpoint) Close() {
	e.p.closeListeners()
	_ = e.p.ua.Close()
}
