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
	"unsafe"

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
	// unread holds the Call-IDs of requests with an RFC 3261 branch whose
	// datagram the scan could not read (unusual formatting): their
	// retransmissions would not be recognised, so their transactions keep
	// sipgo's path (respondTx).
	unread *finishedTable
	m      *finishedMetrics

	connMu sync.Mutex
	conns  []net.PacketConn // the UDP sockets server entries were answered from (one per listener)
}

// connID is the index (+1) of pc in f.conns, added if new.
func (f *finished) connID(pc net.PacketConn) uint16 {
	f.connMu.Lock()
	defer f.connMu.Unlock()
	for i, c := range f.conns {
		if c == pc {
			return uint16(i + 1)
		}
	}
	if len(f.conns) >= 1<<16-1 {
		return 0
	}
	f.conns = append(f.conns, pc)
	return uint16(len(f.conns))
}

// conn is the socket of connID id (nil for 0).
func (f *finished) conn(id uint16) net.PacketConn {
	if id == 0 {
		return nil
	}
	f.connMu.Lock()
	defer f.connMu.Unlock()
	if int(id) > len(f.conns) {
		return nil
	}
	return f.conns[id-1]
}

// destLen is the size of an encoded destination: 16 address bytes and
// the port.
const destLen = 18

// appendDest writes dest as the first destLen bytes of a server entry's
// data, before the response (decodeDest reads them).
func appendDest(buf *bytes.Buffer, dest netip.AddrPort) {
	a := dest.Addr().As16()
	buf.Write(a[:])
	buf.WriteByte(byte(dest.Port() >> 8))
	buf.WriteByte(byte(dest.Port()))
}

// decodeDest splits what encodeDest wrote.
func decodeDest(s string) (netip.AddrPort, []byte, bool) {
	if len(s) < destLen {
		return netip.AddrPort{}, nil, false
	}
	var a [16]byte
	copy(a[:], s)
	port := uint16(s[16])<<8 | uint16(s[17])
	return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), port), unsafeBytes(s[destLen:]), true
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
	f := &finished{server: newFinishedTable(ttl, 0, nil), client: newFinishedTable(ttl, 0, nil),
		unread: newFinishedTable(ttl, 1<<14, nil), m: m}
	f.server.onEvict, f.client.onEvict = m.evicted.Inc, m.evicted.Inc
	p.fin = f
	return nil
}

// sweep drops expired entries each second until ctx is done (run by Serve).
func (f *finished) sweep(ctx context.Context) {
	server, client := f.m.entries.WithLabelValues("server"), f.m.entries.WithLabelValues("client")
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { f.client.sweep(ctx, time.Second, func(n int) { client.Set(float64(n)) }) })
	wg.Go(func() { f.unread.sweep(ctx, time.Second, nil) })
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
	if _, odd := p.fin.unread.getString(callID(req)); odd && !sip.IsReliable(req.Transport()) {
		return false, tx.Respond(res) // its retransmissions would not be recognised: sipgo absorbs them
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
		p.fin.server.put(key, finishedEntry{conn: p.fin.connID(udp.PacketConn)})
		err = writeRendered(udp, res) // relaydest.go
		st.Terminate()
		return true, err
	}
	dest, perr := netip.ParseAddrPort(res.Destination())
	if perr != nil {
		return false, tx.Respond(res)
	}
	buf := renderPool.Get().(*bytes.Buffer)
	buf.Reset()
	appendDest(buf, dest) // the entry's data, in the render buffer: the table copies it
	res.StringWrite(buf)
	if buf.Len()-destLen > sip.UDPMTUSize-200 {
		renderPool.Put(buf)
		return false, tx.Respond(res) // sipgo refuses it the same way
	}
	data := buf.Bytes()
	p.fin.server.put(key, finishedEntry{data: unsafeString(data), conn: p.fin.connID(udp.PacketConn)})
	err = writeUDP(udp.PacketConn, data[destLen:], dest)
	renderPool.Put(buf)
	st.Terminate()
	return true, err
}

// writeUDP sends b to to from pc, without allocating an address when pc
// is (or wraps) a *net.UDPConn.
func writeUDP(pc net.PacketConn, b []byte, to netip.AddrPort) error {
	if w, ok := pc.(*udpConn); ok {
		if done, err := w.raw.writeTo(b, to); done {
			return err
		}
		pc = w.PacketConn
	}
	if uc, ok := pc.(*net.UDPConn); ok {
		_, err := uc.WriteToUDPAddrPort(b, to)
		return err
	}
	_, err := pc.WriteTo(b, net.UDPAddrFromAddrPort(to))
	return err
}

// finishClient ends a client transaction once its final response has
// been relayed, where sipgo would keep it 32 s (Timer D of a non-INVITE
// over UDP, Timer M of an INVITE answered 2xx) with the request it sent
// and the response:
//   - a non-INVITE's retransmitted final responses then reach
//     unmatchedResponse, which drops them (what Timer K's wait is for);
//   - an INVITE answered 2xx has had its branch put in the client table
//     (rememberBranch), so unmatchedResponse relays the node's 2xx
//     retransmissions upstream.
//
// A non-2xx final to INVITE is left to sipgo: the transaction ACKs its
// retransmissions.
//
// sipgo v1.7.3 starts Timer D or M after passing the response up and does
// not stop Timer M when a transaction is terminated, so the transaction
// may stay reachable from its timer. The request it sent (the proxy's copy,
// sharing the received request's headers) and the response (relayed and
// done with) are therefore emptied, so only the bare transaction stays.
// releaseRes is false when the server transaction still holds res (it was
// sent through sipgo's FSM).
func (p *Proxy) finishClient(ctxTx sip.ClientTransaction, canceller *cancelSender, in *sip.Request,
	res *sip.Response, releaseRes bool) {
	if p.fin == nil || res.IsProvisional() {
		return
	}
	if in.IsInvite() && !res.IsSuccess() {
		return
	}
	origin := settledRequest(ctxTx)
	if origin == nil {
		return // not a sipgo transaction (tests' fakes): left as it is
	}
	ctxTx.Terminate()
	if canceller != nil {
		canceller.retire() // it reads the INVITE to build a CANCEL: not any more
	}
	*origin = sip.Request{}
	if releaseRes {
		*res = sip.Response{}
	}
}

// rememberBranch puts the branch of a client INVITE transaction answered
// 2xx in the client table, before the 2xx is relayed (a retransmission may
// follow at once), when the 2xx came back through our Via. The branch is
// read from the request the proxy sent (not a piece of a received
// datagram); the table keeps a copy of it. Of the Call-ID only a hash is
// kept.
func (p *Proxy) rememberBranch(ctxTx sip.ClientTransaction, res *sip.Response, in *sip.Request, fromCaller bool) {
	if p.fin == nil || p.ourBranch(res) == "" {
		return
	}
	sent := settledRequest(ctxTx)
	if sent == nil || sent.Via() == nil {
		return
	}
	branch, _ := sent.Via().Params.Get("branch")
	if !strings.HasPrefix(branch, rfc3261Cookie) {
		return
	}
	p.fin.client.put(branch, finishedEntry{sum: p.fin.client.callSum(callID(in)), flag: fromCaller})
}

// settledRequest is the request a client transaction sent, when it is a
// sipgo transaction the proxy can release.
func settledRequest(ctxTx sip.ClientTransaction) *sip.Request {
	if t, ok := ctxTx.(*sip.ClientTx); ok {
		return t.Origin()
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
	id := callIDRes(res)
	if ok && p.fin.client.callSum(id) != e.sum {
		ok = false // our branch, another call: not relayed
	}
	if !ok {
		p.fin.m.unmatched[unmatchedUnknown].Inc()
		p.log.Debug().Str("call_id", id).Str("from", res.Source()).Int("code", res.StatusCode).
			Msg("2xx matching no transaction sipedge forwarded: dropped")
		return
	}
	r := upstream(res)
	if r == nil {
		p.fin.m.unmatched[unmatchedNoVia].Inc()
		return
	}
	p.stripUntrustedResponse(res, r)
	if err := p.anchor(r, id, !e.flag); err != nil {
		p.metrics.sdpRejected.WithLabelValues("passed").Inc()
		p.log.Warn().Err(err).Str("call_id", id).Int("code", r.StatusCode).
			Msg("SDP of a response cannot be anchored: passed unchanged")
	}
	if err := p.srv.WriteResponse(r); err != nil {
		p.notSent("retransmitted 2xx", id, r.StatusCode, err)
		return
	}
	p.fin.m.relayed.Inc()
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
	if !ok || len(tx.key) > maxScanKey {
		p.noteUnread(data)
		return false
	}
	if string(tx.method) == "ACK" {
		return false
	}
	e, ok := p.fin.server.get(tx.key)
	if cancel {
		if ok && e.data == "" { // the CANCEL of an INVITE answered 2xx
			if pc := p.fin.conn(e.conn); pc != nil {
				return p.answerLateCancel(info, data, pc)
			}
			return false
		}
		// A retransmitted CANCEL already answered (481: no such INVITE)
		// has a transaction of its own.
		if tx, ok = scanServerKey(data, buf[:0], ""); !ok || len(tx.key) > maxScanKey {
			return false
		}
		e, ok = p.fin.server.get(tx.key)
	}
	if !ok {
		return false
	}
	if p.fin.conn(e.conn) == nil {
		return false // its listener is gone: sipgo's path
	}
	return p.answerFinished(e, func() string { return rawCallID(data) })
}

// answerFinished does for a retransmission of the finished transaction e
// what the transaction would have done: an INVITE answered 2xx is dropped,
// another gets its final response's bytes again. It reports false when
// nothing was resent (no socket any more, or no readable response);
// callID is read only to log a failed write.
func (p *Proxy) answerFinished(e finishedEntry, callID func() string) bool {
	if e.data == "" {
		p.fin.m.inviteDropped.Inc()
		return true
	}
	pc := p.fin.conn(e.conn)
	dest, resp, ok := decodeDest(e.data)
	if pc == nil || !ok {
		return false
	}
	if err := writeUDP(pc, resp, dest); err != nil {
		p.notSent("retransmitted final response", callID(), 0, err)
	}
	p.fin.m.resent.Inc()
	return true
}

// noteUnread remembers the Call-ID of a request the scan could not read
// although it may carry an RFC 3261 branch (a response or a request
// without the cookie is no concern: sipgo's path either way).
func (p *Proxy) noteUnread(data []byte) {
	if bytes.HasPrefix(data, []byte("SIP/")) || !bytes.Contains(data, []byte(rfc3261Cookie)) {
		return
	}
	if id := rawCallID(data); id != "" {
		p.fin.unread.put(id, finishedEntry{})
	}
}

// answerLateCancel answers 200 to a CANCEL of an INVITE already answered
// 2xx, as sipgo did while the INVITE's transaction was Accepted: the
// CANCEL has no effect (RFC 3261 §9.2).
func (p *Proxy) answerLateCancel(info sip.TransportReadProps, data []byte, pc net.PacketConn) bool {
	ua, ok := udpAddrOf(info.RemoteAddr) // srcaddr.go
	if !ok {
		return false
	}
	out := rawResponse(data, 200, "OK", p.opts.UserAgent)
	if out == nil {
		return false
	}
	if err := writeUDP(pc, out, ua.AddrPort()); err != nil && !errors.Is(err, net.ErrClosed) {
		p.notSent("200 to CANCEL", rawCallID(data), 200, err)
	}
	p.fin.m.cancelAnswered.Inc()
	return true
}

// unsafeString is b as a string without a copy; b must not change after.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// unsafeBytes is s as bytes without a copy, for reading only (a write to
// a socket).
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// lateRetransmission absorbs, in onRequest, a retransmitted request of a
// UDP server transaction already answered and ended here (respondTx) that
// sipgo handed up as a new transaction. That happens when the datagram was
// read before the answer was recorded, so absorb let it through, and its
// goroutine reached sipgo's transaction layer only after the transaction
// had been ended: on a loaded machine, a caller's INVITE retransmitted
// 500 ms after the first (no 100 yet) and handled after the 2xx. Forwarded,
// it became a second call to the node with the same Call-ID. As absorb
// would: an INVITE answered 2xx is dropped (RFC 6026 §7.1), a non-INVITE
// gets its final response again (§17.2.2). It reports whether it did; the
// new server transaction is then ended without an answer.
func (p *Proxy) lateRetransmission(req *sip.Request, tx sip.ServerTransaction) bool {
	if p.fin == nil || req.IsAck() || req.IsCancel() || sip.IsReliable(req.Transport()) {
		return false
	}
	st, ok := tx.(*sip.ServerTx)
	if !ok {
		return false
	}
	key := st.Key()
	if !strings.HasPrefix(key, rfc3261Cookie) {
		return false
	}
	e, ok := p.fin.server.getString(key)
	if !ok {
		return false
	}
	_ = p.answerFinished(e, func() string { return callID(req) }) // absorbed even when nothing can be resent
	p.log.Debug().Str("call_id", callID(req)).Str("method", string(req.Method)).
		Msg("retransmission of a finished transaction reached the proxy as a new one: absorbed")
	st.Terminate()
	return true
}
