package proxy

import "github.com/emiago/sipgo/sip"

// retransHook is retransmitted2xx as a func value made once: a method
// value passed to OnRetransmission allocates a closure on every client
// transaction (twice per call set-up with failover on).
func (p *Proxy) retransHook() sip.FnTxResponse {
	p.retransOnce.Do(func() { p.retrans = p.retransmitted2xx })
	return p.retrans
}
