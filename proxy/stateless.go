package proxy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net"
	"strconv"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/admission"
)

// The stateless reject path, in the spirit of Kamailio's sl module: while
// this instance turns new dialogs away with a verdict that needs no I/O
// (deserviced: 503 + Retry-After or 302; shutting down; no node to place
// on), a new-dialog INVITE, REGISTER or SUBSCRIBE over UDP is answered
// from the read filter, before sipgo creates a transaction: no 100
// Trying, no timers, no Completed state waiting for the ACK.
//
//   - The checks that come before admission on the stateful path run first,
//     in the same order (flood limits in floodFilter and limitRefusal,
//     sanity 505/416/420/400, missing headers, Max-Forwards, loop); a
//     request any of them would answer, a request with a To tag or a
//     sipedge route, and one with X-Sipedge-* headers (node calls, trust)
//     go the stateful way, untouched.
//   - The verdict is admission's (admission.Immediate): admission stays the
//     place a 503 is decided, counted and logged.
//   - The answer is deterministic: a retransmitted request gets the same
//     bytes again. Its To tag starts with a per-process random prefix, so
//     the ACK of the answer is recognised with no state and absorbed:
//     never forwarded, never a transaction.

// ImmediateAdmitter is an Admitter that can decide some rejections with no
// I/O (admission.Admitter does). The proxy takes the stateless path only
// through one.
type ImmediateAdmitter interface {
	// Rejecting reports cheaply whether Immediate may reject now.
	Rejecting() bool
	// Immediate returns the verdict of req when it is a rejection reached
	// with no I/O; false sends req the stateful way (Admit).
	Immediate(req admission.Request) (admission.Verdict, bool)
	// Rejected counts and logs a rejection answered from Immediate.
	Rejected(req admission.Request, v admission.Verdict)
}

var _ ImmediateAdmitter = (*admission.Admitter)(nil)

// stateless is the proxy's state for the stateless reject path.
type stateless struct {
	adm    ImmediateAdmitter // nil: path off
	tag    string            // To tag prefix of stateless answers: random per process, then '-'
	parser *sip.Parser
	bufs   sync.Pool // *bytes.Buffer
	// parsedOnly: every request is parsed by sipgo, none read from its
	// bytes alone (tests compare the two readings).
	parsedOnly bool
}

// initStateless turns the stateless path on when admit can decide
// immediately (Endpoint.Proxy calls it).
func (p *Proxy) initStateless(admit Admitter) {
	p.sl.adm, _ = admit.(ImmediateAdmitter)
	var rnd [5]byte
	_, _ = rand.Read(rnd[:])
	p.sl.tag = "sl" + hex.EncodeToString(rnd[:]) + "-"
	p.sl.parser = sip.NewParser()
	p.sl.bufs.New = func() any { return bytes.NewBuffer(make([]byte, 0, 1024)) }
}

var (
	ackPrefix       = []byte("ACK ")
	registerPrefix  = []byte("REGISTER ")
	subscribePrefix = []byte("SUBSCRIBE ")
)

// statelessFilter answers data statelessly and returns nil, or returns
// data for sipgo to parse and handle as usual.
func (p *Proxy) statelessFilter(info sip.TransportReadProps, data []byte) []byte {
	if p.sl.adm == nil || info.Transport != "UDP" {
		return data
	}
	switch {
	case bytes.HasPrefix(data, ackPrefix):
		if p.ownACK(data) {
			p.metrics.stateless.acks.Inc()
			return nil
		}
		return data
	case bytes.HasPrefix(data, invitePrefix), bytes.HasPrefix(data, registerPrefix), bytes.HasPrefix(data, subscribePrefix):
	default:
		return data
	}
	ua, ok := udpAddrOf(info.RemoteAddr) // srcaddr.go
	if !ok || !p.sl.adm.Rejecting() || rawToTag(data) != nil {
		return data // re-INVITEs and other in-dialog requests are not parsed twice
	}
	conn := p.udpAt(info.LocalAddr)
	if !p.sl.parsedOnly {
		var r rawRequest
		if scanRaw(data, &r) { // stateless_raw.go: a plain request, read from its bytes
			if p.rejectRawStateless(&r, slPeer{ua, conn}) {
				return nil
			}
			return data
		}
	}
	msg, err := p.sl.parser.ParseSIP(data)
	if err != nil {
		return data // sipgo's parse fails the same way and answers (wire.go)
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		return data
	}
	req.SetTransport("UDP")
	req.SetSource(ua.String())
	if !p.rejectStateless(req, slPeer{ua, conn}) {
		return data
	}
	return nil
}

// rejectStateless answers req statelessly and reports true when its
// verdict is immediate; false leaves req to the stateful path, with
// nothing counted or charged.
func (p *Proxy) rejectStateless(req *sip.Request, to slPeer) bool {
	if code, _, _ := sanity(req); code != 0 {
		return false
	}
	if malformed(req) != "" {
		return false
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return false
	}
	if hasToTag(req) || firstRouteOurs(req) || hasTrusted(req) || p.isLoop(req) {
		return false
	}
	id := callID(req)
	if req.IsInvite() && (p.dialogs.HasCall(id) || p.limits.known(id)) {
		return false // a retransmission of an INVITE the stateful path has
	}
	areq := admission.Request{Method: string(req.Method), CallID: id, ConfID: req.Recipient.User}
	if to := req.To(); to != nil {
		areq.AOR = to.Address.User + "@" + to.Address.Host
	}
	if areq.Key() == "" {
		return false // 404
	}
	v, ok := p.sl.adm.Immediate(areq)
	if !ok {
		return false
	}
	// From here on req is this path's: counted as the stateful path
	// counts it, limits first, as there.
	p.metrics.countRequest(req.Method)
	var why limitReason
	if p.limits != nil {
		_, why = p.limitRefusal(req)
	}
	if a, send := p.statelessAnswer(why, areq, v); send {
		p.sendStateless(req, to, a)
	}
	return true
}

// slAnswer is what a stateless reject sends: retryAfter < 0 means no
// Retry-After, contact is nil but for a 302.
type slAnswer struct {
	code       int
	reason     string
	retryAfter int
	contact    sip.Header
}

// statelessAnswer is the answer to a new dialog whose immediate verdict
// is v, the flood limits (why) first, as on the stateful path; send false
// means no answer (the source is flooding). A verdict answered here is
// counted and logged by admission as Admit would.
func (p *Proxy) statelessAnswer(why limitReason, areq admission.Request, v admission.Verdict) (a slAnswer, send bool) {
	switch why {
	case limitNone: // an INVITE answered at once is never half-open
	case limitSourceDrop:
		return a, false
	default:
		retry := -1
		if p.limits.opt.RetryAfter > 0 {
			retry = p.limits.opt.RetryAfter
		}
		return slAnswer{503, "Service Unavailable (" + why.String() + ")", retry, nil}, true
	}
	p.sl.adm.Rejected(areq, v)
	switch v.Code {
	case 503:
		return slAnswer{v.Code, v.Reason, v.RetryAfter, nil}, true
	case 302:
		host, port := splitHostPort(v.Contact)
		return slAnswer{v.Code, v.Reason, -1,
			&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: areq.ConfID, Host: host, Port: port}}}, true
	}
	return slAnswer{v.Code, v.Reason, -1, nil}, true
}

// sendStateless writes the answer to req (retryAfter < 0: no Retry-After)
// from the listener it came to, and counts it.
func (p *Proxy) sendStateless(req *sip.Request, to slPeer, a slAnswer) {
	buf := p.sl.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	p.appendStateless(buf, req, a.code, a.reason, a.retryAfter, a.contact)
	p.metrics.countStatus(req, a.code)
	p.metrics.stateless.answers.Inc()
	if _, err := to.conn.WriteTo(buf.Bytes(), to.addr); err != nil {
		p.notSent("response", callID(req), a.code, err)
	}
	p.sl.bufs.Put(buf)
}

// appendStateless writes the answer to req into buf (RFC 3261 §8.2.6.2):
// its Vias (the top one with received and rport filled in, RFC 3581),
// From, To with this path's tag, Call-ID, CSeq, then Retry-After or
// Contact, Server and Content-Length. The same request gives the same
// bytes. It changes req's top Via and To.
func (p *Proxy) appendStateless(buf *bytes.Buffer, req *sip.Request, code int, reason string, retryAfter int, contact sip.Header) {
	buf.WriteString("SIP/2.0 ")
	buf.WriteString(strconv.Itoa(code))
	buf.WriteByte(' ')
	buf.WriteString(reason)
	buf.WriteString("\r\n")
	top := true
	for _, h := range req.Headers() {
		via, ok := h.(*sip.ViaHeader)
		if !ok {
			continue
		}
		if top {
			top = false
			answerRport(via, req.Source()) // trying.go
		}
		via.StringWrite(buf)
		buf.WriteString("\r\n")
	}
	req.From().StringWrite(buf)
	buf.WriteString("\r\n")
	to := req.To()
	to.Params.Add("tag", p.statelessTag(req))
	to.StringWrite(buf)
	buf.WriteString("\r\n")
	req.CallID().StringWrite(buf)
	buf.WriteString("\r\n")
	req.CSeq().StringWrite(buf)
	buf.WriteString("\r\n")
	if retryAfter >= 0 {
		buf.WriteString("Retry-After: ")
		buf.WriteString(strconv.Itoa(retryAfter))
		buf.WriteString("\r\n")
	}
	if contact != nil {
		contact.StringWrite(buf)
		buf.WriteString("\r\n")
	}
	if p.opts.UserAgent != "" {
		buf.WriteString("Server: ")
		buf.WriteString(p.opts.UserAgent)
		buf.WriteString("\r\n")
	}
	buf.WriteString("Content-Length: 0\r\n\r\n")
}

// statelessTag is the To tag of the answer to req: the process's prefix
// and a hash of what identifies the request (Call-ID, From tag, CSeq, top
// Via branch), so a retransmission gets the same tag.
func (p *Proxy) statelessTag(req *sip.Request) string {
	h := uint64(14695981039346656037)
	mix := func(s string) {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
		h ^= 0xff
		h *= 1099511628211
	}
	mix(callID(req))
	mix(fromTag(req))
	if cs := req.CSeq(); cs != nil {
		var num [20]byte
		mix(string(strconv.AppendUint(num[:0], uint64(cs.SeqNo), 10)))
	}
	if via := req.Via(); via != nil {
		b, _ := via.Params.Get("branch")
		mix(b)
	}
	var out [48]byte
	return string(strconv.AppendUint(append(out[:0], p.sl.tag...), h, 16))
}

// ownACK reports whether the ACK in data acknowledges a stateless answer
// of this process: its To tag carries this process's prefix.
func (p *Proxy) ownACK(data []byte) bool {
	tag := rawToTag(data)
	return len(tag) > len(p.sl.tag) && string(tag[:len(p.sl.tag)]) == p.sl.tag
}

// firstRouteOurs reports whether the first Route entry carries sipedge's
// state parameter, as ourRoute reads it (without decoding or counting it).
func firstRouteOurs(req *sip.Request) bool {
	for _, h := range req.Headers() {
		if rh, ok := h.(*sip.RouteHeader); ok {
			_, ours := rh.Address.UriParams.Get(routeParam)
			return ours
		}
	}
	return false
}

// known reports whether an INVITE of Call-ID id is in progress on the
// stateful path (limitNewDialog began it).
func (l *limiter) known(id string) bool {
	if l == nil {
		return false
	}
	sh := l.callShard(id)
	sh.mu.Lock()
	_, ok := sh.m[id]
	sh.mu.Unlock()
	return ok
}

// countStatus is countResponse for an answer built as bytes.
func (m *metrics) countStatus(req *sip.Request, code int) {
	class := code/100 - 1
	if class < 0 || class > 5 {
		return
	}
	cs := m.otherResp
	if cseq := req.CSeq(); cseq != nil {
		if c, ok := m.responses[cseq.MethodName]; ok {
			cs = c
		}
	}
	cs[class].Inc()
}

// rawToTag returns the tag parameter of the To header of the raw message
// in data (nil if none), without allocating: the header's parameters are
// what follows its name-addr's '>' (or, for a bare URI, its first ';').
// rawSanity (wire.go) already removed LWS around the '=' of a tag.
func rawToTag(data []byte) []byte {
	i := bytes.IndexByte(data, '\n') + 1 // skip the start line
	if i <= 0 {
		return nil
	}
	for i < len(data) {
		j := bytes.IndexByte(data[i:], '\n')
		end := len(data)
		if j >= 0 {
			end = i + j
		}
		for end+1 < len(data) && (data[end+1] == ' ' || data[end+1] == '\t') { // folded
			if k := bytes.IndexByte(data[end+1:], '\n'); k >= 0 {
				end = end + 1 + k
			} else {
				end = len(data)
			}
		}
		line := data[i:end]
		if len(bytes.TrimRight(line, "\r")) == 0 {
			return nil // end of headers
		}
		if v, ok := toValue(line); ok {
			return tagOf(v)
		}
		i = end + 1
	}
	return nil
}

// toValue returns the value of line when it is a To header ("To", "t").
func toValue(line []byte) ([]byte, bool) {
	c := bytes.IndexByte(line, ':')
	if c <= 0 {
		return nil, false
	}
	n := bytes.TrimRight(line[:c], " \t")
	if !(len(n) == 2 && n[0]|0x20 == 't' && n[1]|0x20 == 'o' || len(n) == 1 && n[0]|0x20 == 't') {
		return nil, false
	}
	return line[c+1:], true
}

// tagOf returns the tag parameter of a From/To value, nil if none.
func tagOf(v []byte) []byte {
	if gt := bytes.LastIndexByte(v, '>'); gt >= 0 {
		v = v[gt+1:]
	} else if semi := bytes.IndexByte(v, ';'); semi >= 0 {
		v = v[semi:]
	} else {
		return nil
	}
	for {
		semi := bytes.IndexByte(v, ';')
		if semi < 0 {
			return nil
		}
		v = bytes.TrimLeft(v[semi+1:], " \t\r\n")
		if len(v) >= 4 && v[0]|0x20 == 't' && v[1]|0x20 == 'a' && v[2]|0x20 == 'g' && v[3] == '=' {
			v = v[4:]
			end := 0
			for end < len(v) && !isLWS(v[end]) && v[end] != ';' && v[end] != ',' {
				end++
			}
			if end == 0 {
				return nil
			}
			return v[:end]
		}
	}
}

// slPeer is where a stateless answer goes: the source, from the UDP
// listener the request arrived on (with several listen addresses the
// caller knows only that one).
type slPeer struct {
	addr *net.UDPAddr
	conn net.PacketConn
}

// udpAt is the UDP listener bound to local (an extra listen address's, or
// the first one's) as sipgo reads it: its writes take the raw path
// (rawudp_linux.go), not the runtime's syscall state.
func (p *Proxy) udpAt(local net.Addr) net.PacketConn {
	if la, ok := local.(*net.UDPAddr); ok {
		for _, l := range p.extra {
			if l.udp != nil && l.udpw != nil {
				if ea, ok := l.udpw.PacketConn.LocalAddr().(*net.UDPAddr); ok && ea.Port == la.Port && ea.IP.Equal(la.IP) {
					return l.udpw
				}
			}
		}
	}
	return p.udpw
}
