package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// Where the proxy meets the finished table (finished.go): a final answer
// on a server transaction, a 2xx on a client INVITE transaction, the UDP
// read filter and sipgo's handler of responses that match no client
// transaction.

// finished is the proxy's finished-transaction state: server keys (what a
// retransmitted request gets) and client branches (whose 2xx
// retransmissions are relayed upstream).
type finished struct {
	server, client *finishedTable
	m              *finishedMetrics
}

// initFinished builds the tables (called by NewEndpoint). Entries live
// 64*T1 (32 s): Timer J of a non-INVITE server transaction over UDP, Timer
// L and Timer M of INVITE transactions answered 2xx (RFC 6026).
func (p *Proxy) initFinished(reg prometheus.Registerer) error {
	m, err := newFinishedMetrics(reg)
	if err != nil {
		return err
	}
	ttl := 64 * sip.T1
	f := &finished{server: newFinishedTable(ttl, 0, nil), client: newFinishedTable(ttl, 0, nil), m: m}
	f.server.onEvict, f.client.onEvict = m.evicted.Inc, m.evicted.Inc
	p.fin = f
	return nil
}

// sweep drops expired entries each second until ctx is done (run by Serve).
func (f *finished) sweep(ctx context.Context) {
	server, client := f.m.entries.WithLabelValues("server"), f.m.entries.WithLabelValues("client")
	go f.client.sweep(ctx, time.Second, func(n int) { client.Set(float64(n)) })
	f.server.sweep(ctx, time.Second, func(n int) { server.Set(float64(n)) })
}

var renderPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// respondTx sends res on the server transaction tx. A final answer the
// finished table can stand in for ends tx at once (released true), so
// sipgo frees the request, the response and the timers:
//   - a non-INVITE over UDP: its bytes are sent and kept, a retransmitted
//     request gets them again (absorb);
//   - an INVITE answered 2xx: only its key is kept (over UDP), a
//     retransmitted INVITE is dropped; over TCP, TLS or WS nothing is kept
//     (nothing is retransmitted on a reliable transport).
//
// Anything else (provisional answers, a non-2xx to INVITE, which waits for
// its ACK and retransmits on Timer G, an RFC 2543 branch) goes through
// sipgo's transaction as before.
func (p *Proxy) respondTx(tx sip.ServerTransaction, res *sip.Response) (released bool, err error) {
	if res.IsProvisional() || p.fin == nil {
		return false, tx.Respond(res)
	}
	base := tx
	if pt, ok := tx.(*placementTx); ok {
		base = pt.ServerTransaction
	}
	st, ok := base.(*sip.ServerTx)
	if !ok {
		return false, tx.Respond(res)
	}
	req := st.Origin()
	invite := req.IsInvite()
	key := st.Key()
	if (invite && !res.IsSuccess()) || !strings.HasPrefix(key, rfc3261Cookie) {
		return false, tx.Respond(res)
	}
	if pt, ok := tx.(*placementTx); ok {
		pt.code.CompareAndSwap(0, int32(res.StatusCode)) // what placementTx.Respond records
	}
	conn := st.Connection()
	if conn == nil {
		return false, tx.Respond(res)
	}
	if sip.IsReliable(req.Transport()) {
		if !invite {
			// sipgo ends it when the handler returns (Timer J is zero).
			return false, tx.Respond(res)
		}
		err = conn.WriteMsg(res)
		st.Terminate()
		return true, err
	}
	udp, ok := conn.(*sip.UDPConnection)
	if !ok || udp.PacketConn == nil {
		return false, tx.Respond(res)
	}
	if invite {
		p.fin.server.put(key, finishedEntry{pc: udp.PacketConn})
		err = conn.WriteMsg(res)
		st.Terminate()
		return true, err
	}
	dest, perr := netip.ParseAddrPort(res.Destination())
	if perr != nil {
		return false, tx.Respond(res)
	}
	buf := renderPool.Get().(*bytes.Buffer)
	buf.Reset()
	res.StringWrite(buf)
	if buf.Len() > sip.UDPMTUSize-200 {
		renderPool.Put(buf)
		return false, tx.Respond(res) // sipgo refuses it the same way
	}
	out := bytes.Clone(buf.Bytes())
	renderPool.Put(buf)
	p.fin.server.put(key, finishedEntry{resp: out, dest: dest, pc: udp.PacketConn})
	err = writeUDP(udp.PacketConn, out, dest)
	st.Terminate()
	return true, err
}

// writeUDP sends b to to from pc, without allocating an address when pc
// is (or wraps) a *net.UDPConn.
func writeUDP(pc net.PacketConn, b []byte, to netip.AddrPort) error {
	if w, ok := pc.(*udpConn); ok {
		pc = w.PacketConn
	}
	if uc, ok := pc.(*net.UDPConn); ok {
		_, err := uc.WriteToUDPAddrPort(b, to)
		return err
	}
	_, err := pc.WriteTo(b, net.UDPAddrFromAddrPort(to))
	return err
}

// finishClient ends a client INVITE transaction that got its 2xx and was
// relayed (sipgo would keep it 32 s in Accepted, with the forwarded INVITE
// and the 2xx, to pass 2xx retransmissions up): its branch goes in the
// table, so unmatchedResponse relays the retransmissions instead.
//
// sipgo v1.7.3 does not stop Timer M when a transaction is terminated, so
// the transaction (and what it points to) stays reachable until the timer
// fires. The request it sent (out, the proxy's copy sharing the received
// INVITE's headers) and the 2xx (res, relayed and done with) are emptied
// so what stays is the bare transaction. releaseRes is false when the
// server transaction still holds res (it was sent through sipgo's FSM).
func (p *Proxy) finishClient(ctxTx sip.ClientTransaction, canceller *cancelSender, branch, id string,
	fromCaller bool, res *sip.Response, releaseRes bool) {
	if p.fin == nil || !strings.HasPrefix(branch, rfc3261Cookie) {
		return
	}
	p.fin.client.put(strings.Clone(branch), finishedEntry{callID: strings.Clone(id), fromCaller: fromCaller})
	origin := settledRequest(ctxTx)
	ctxTx.Terminate()
	if canceller != nil {
		canceller.retire() // it reads the INVITE to build a CANCEL: not any more
	}
	if origin != nil {
		*origin = sip.Request{}
	}
	if releaseRes {
		*res = sip.Response{}
	}
}

// settledRequest is the request a client transaction sent, when it is a
// sipgo transaction the proxy can release.
func settledRequest(ctxTx sip.ClientTransaction) *sip.Request {
	switch t := ctxTx.(type) {
	case *sip.ClientTx:
		return t.Origin()
	case *failoverTx:
		t.mu.Lock()
		cur := t.cur
		t.mu.Unlock()
		if ct, ok := cur.(*sip.ClientTx); ok {
			return ct.Origin()
		}
	}
	return nil
}

// ourBranch is the branch of the top Via of a response from the next hop
// when that Via is this proxy's ("" otherwise).
func (p *Proxy) ourBranch(res *sip.Response) string {
	via := res.Via()
	if via == nil || !p.viaIsOurs(via) {
		return ""
	}
	b, _ := via.Params.Get("branch")
	return b
}

// viaIsOurs reports whether a Via's sent-by is the address this proxy
// writes in the Via of every request it sends.
func (p *Proxy) viaIsOurs(via *sip.ViaHeader) bool {
	port := via.Port
	if port == 0 {
		port = sip.DefaultPort(via.Transport)
	}
	return strings.Trim(via.Host, "[]") == strings.Trim(p.advHost, "[]") && port == p.advPort
}

// retransmitted2xx is the client transactions' retransmission hook: a 2xx
// retransmission that reaches a transaction not yet ended takes the same
// path as one that arrives after (the branch must be in the table).
func (p *Proxy) retransmitted2xx(res *sip.Response) { p.unmatchedResponse(res) }

// unmatchedResponse is sipgo's handler of responses that match no client
// transaction (RFC 3261 §17.1.1.2 passes them to the core). Only a 2xx to
// INVITE whose top Via is this proxy's and whose branch is in the finished
// table is relayed upstream, with its SDP anchored as the first 2xx was:
// anything else is dropped and counted (sipedge relays no response it
// cannot match to a transaction it forwarded).
func (p *Proxy) unmatchedResponse(res *sip.Response) {
	if p.fin == nil {
		return
	}
	via := res.Via()
	if via == nil || !p.viaIsOurs(via) {
		p.fin.m.unmatched[unmatchedNotOurs].Inc()
		return
	}
	cs := res.CSeq()
	if !res.IsSuccess() || cs == nil || cs.MethodName != sip.INVITE {
		p.fin.m.unmatched[unmatchedNot2xx].Inc()
		return
	}
	branch, _ := via.Params.Get("branch")
	e, ok := p.fin.client.getString(branch)
	if !ok {
		p.fin.m.unmatched[unmatchedUnknown].Inc()
		p.log.Debug().Str("call_id", callIDRes(res)).Str("from", res.Source()).Int("code", res.StatusCode).
			Msg("2xx matching no transaction sipedge forwarded: dropped")
		return
	}
	r := upstream(res)
	if r == nil {
		p.fin.m.unmatched[unmatchedNoVia].Inc()
		return
	}
	p.stripUntrustedResponse(res, r)
	if err := p.anchor(r, e.callID, !e.fromCaller); err != nil {
		p.metrics.sdpRejected.WithLabelValues("passed").Inc()
		p.log.Warn().Err(err).Str("call_id", e.callID).Int("code", r.StatusCode).
			Msg("SDP of a response cannot be anchored: passed unchanged")
	}
	if err := p.srv.WriteResponse(r); err != nil {
		p.notSent("retransmitted 2xx", e.callID, r.StatusCode, err)
		return
	}
	p.fin.m.relayed.Inc()
}

// readFilter is the UDP (and stream) read filter: the flood limits first,
// then retransmissions of finished transactions.
func (p *Proxy) readFilter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	data, err := p.floodFilter(info, data)
	if err != nil || len(data) == 0 {
		return data, err
	}
	if p.absorb(info, data) {
		return nil, nil
	}
	return data, nil
}

// maxScanKey is the longest transaction key looked up from the stack;
// longer ones take sipgo's path.
const maxScanKey = 256

// absorb answers a retransmitted request of a finished UDP server
// transaction before sipgo parses it: a non-INVITE gets its final
// response's bytes again, an INVITE answered 2xx is dropped, a CANCEL of
// one gets 200 (the INVITE's transaction is over; RFC 3261 §9.2). It
// reports whether it did. Requests whose top Via branch lacks the RFC 3261
// cookie, responses and ACKs always go on to sipgo.
func (p *Proxy) absorb(info sip.TransportReadProps, data []byte) bool {
	if p.fin == nil || info.Transport != "UDP" || len(data) < 8 || data[0] == 'S' || data[0] == 'A' {
		return false // a response, an ACK (its own transaction), or nothing
	}
	var buf [maxScanKey]byte
	cancel := bytes.HasPrefix(data, []byte("CANCEL "))
	as := ""
	if cancel {
		as = "INVITE"
	}
	tx, ok := scanServerKey(data, buf[:0], as)
	if !ok || len(tx.key) > maxScanKey || string(tx.method) == "ACK" {
		return false
	}
	e, ok := p.fin.server.get(tx.key)
	if !ok {
		return false
	}
	switch {
	case cancel:
		if e.resp != nil || e.pc == nil {
			return false
		}
		return p.answerLateCancel(info, data, e)
	case e.resp == nil:
		p.fin.m.inviteDropped.Inc()
		return true
	}
	if err := writeUDP(e.pc, e.resp, e.dest); err != nil {
		p.notSent("retransmitted final response", rawCallID(data), 0, err)
	}
	p.fin.m.resent.Inc()
	return true
}

// answerLateCancel answers 200 to a CANCEL of an INVITE already answered
// 2xx, as sipgo did while the INVITE's transaction was Accepted: the
// CANCEL has no effect (RFC 3261 §9.2).
func (p *Proxy) answerLateCancel(info sip.TransportReadProps, data []byte, e finishedEntry) bool {
	ua, ok := info.RemoteAddr.(*net.UDPAddr)
	if !ok {
		return false
	}
	out := rawResponse(data, 200, "OK", p.opts.UserAgent)
	if out == nil {
		return false
	}
	if err := writeUDP(e.pc, out, ua.AddrPort()); err != nil && !errors.Is(err, net.ErrClosed) {
		p.notSent("200 to CANCEL", rawCallID(data), 200, err)
	}
	p.fin.m.cancelAnswered.Inc()
	return true
}
