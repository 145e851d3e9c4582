package proxy

import (
	"context"
	"fmt"

	"github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/ring"
)

// Pinger probes media nodes with SIP OPTIONS. Any final response means the
// node's SIP stack is alive (a node may well answer 404 or 405 to OPTIONS);
// a timeout or transport error means it is not.
type Pinger struct{ p *Proxy }

var _ ring.Pinger = Pinger{}

// Pinger returns the node prober bound to this proxy's SIP stack.
func (p *Proxy) Pinger() Pinger { return Pinger{p: p} }

// Ping sends one OPTIONS to n and waits for a final response or ctx.
func (pg Pinger) Ping(ctx context.Context, n ring.Node) error {
	p := pg.p
	host, port := splitHostPort(n.Addr)
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: host, Port: port})
	tp := transportOrUDP(n.Transport)
	if err := p.nodeTransportOK(tp); err != nil {
		return fmt.Errorf("probe %s at %s: %w", n.Name, n.Addr, err)
	}
	la := p.addrFacing(n.Addr, p.firstAddr()) // a listen address of the node's family
	la = p.onTransport(la, tp)                // over TLS or a WebSocket: that listener
	req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: upper(tp),
		Host: la.host, Port: la.port, Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}}})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "sipedge", Host: la.host, Port: la.port},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(10)}}}
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: port}})
	id := sip.CallIDHeader("probe-" + sip.GenerateTagN(16))
	req.AppendHeader(&id)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetBody(nil)
	req.SetDestination(n.Addr)
	req.SetTransport(upper(tp))
	if tp == "udp" {
		req.Laddr = la.la
	}
	res, err := p.client.Do(ctx, req, keepAsBuilt)
	if err != nil {
		return fmt.Errorf("probe %s at %s: %w", n.Name, n.Addr, err)
	}
	if res.StatusCode >= 500 && res.StatusCode != 501 {
		// 503 means the node says it cannot serve; 501/405 only that it
		// does not implement OPTIONS, which still proves it is alive.
		return fmt.Errorf("probe %s at %s: answered %d", n.Name, n.Addr, res.StatusCode)
	}
	return nil
}
