package proxy

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"

	"github.com/emiago/sipgo/sip"
)

// The ACK of a 2xx is a transaction of its own that an RFC 3261 proxy
// forwards statelessly (§16.11). sipgo would still parse it, start a
// goroutine and a server transaction with its timers for it, and the
// proxy would copy and re-serialise it (forwardAck): about a third of
// the allocations of a call set-up. forwardRawACK does what forwardAck
// does from the datagram's bytes, on the read goroutine, before sipgo
// sees it: the same route token check (ourRoute), the same next hop
// (nextHop), Max-Forwards decremented, received/rport on the sender's
// Via (markReceived), sipedge's Via with the same deterministic branch
// (statelessBranch) on top, sipedge's Route entries removed, every
// other line as it came; the same counters and the ACK-timeout
// bookkeeping (limitAcked).
//
// Anything else declines (false) and takes today's path unchanged:
// media anchoring on (an ACK may carry an answer), a body, several
// listen addresses, TCP, a next hop over TCP or named by a host name, an
// ACK without a sipedge route (placement routing), a bad token, an ACK
// whose transaction key a request of its Call-ID had (the ACK of a
// non-2xx answer, which its INVITE transaction absorbs), or any line
// the parsed path could read differently (the rules of scanRaw:
// folding, bare CR/LF, non-printable bytes, compact or duplicated
// single-valued headers, unusual URIs and addresses, X-Sipedge-*).

// rawAck is what forwardRawACK reads of an ACK: slices of the datagram.
type rawAck struct {
	requestLine        []byte // with its CRLF, forwarded as it came
	ruriUser, ruriHost []byte
	ruriPort           int
	fromTag, toTag     []byte
	callID             []byte
	cseq               uint32
	branch             []byte // top Via's
	viaHost            []byte // top Via's sent-by host
	topVia             int    // index in lines of the top Via
	maxFwd             int    // index in lines of Max-Forwards
	mf                 int    // its value
	routes             [2]int // indexes in lines of sipedge's Route entries
	tokens             [2][]byte
	nroutes            int
	noLength           bool // no Content-Length: sipgo writes one
	lines              [maxRawAckLines][]byte
	nlines             int
}

// maxRawAckLines bounds the header lines read; an ACK with more is parsed.
const maxRawAckLines = 32

// scanRawAck reads an ACK's bytes into a and reports whether the raw path
// may forward it.
func scanRawAck(data []byte, a *rawAck) bool {
	if !bytes.HasPrefix(data, ackPrefix) {
		return false
	}
	_, uri, rest, ok := rawRequestLine(data) // stateless_raw.go
	if !ok {
		return false
	}
	if a.ruriUser, a.ruriHost, ok = plainSIPURI(uri); !ok {
		return false
	}
	a.ruriPort = uriPort(uri)
	a.requestLine = data[:len(data)-len(rest)]
	var seen [numH]int
	clen := -1
	a.topVia, a.maxFwd, a.nroutes, a.nlines = -1, -1, 0, 0
	routesDone := false
	for {
		eol := bytes.Index(rest, crlf)
		if eol < 0 {
			return false
		}
		line := rest[:eol]
		rest = rest[eol+2:]
		if len(line) == 0 {
			break // the body follows
		}
		if line[0] == ' ' || line[0] == '\t' || !plainLine(line) || a.nlines == maxRawAckLines {
			return false // folded, bare CR/LF, unusual bytes, or too many lines
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			return false
		}
		name := trimSPHT(line[:c])
		value := trimSPHT(line[c+1:])
		i := a.nlines
		a.lines[i] = line
		a.nlines++
		if bytes.EqualFold(name, []byte("Route")) {
			tok, ours, ok := ourRouteValue(value)
			if !ok {
				return false // sipgo parses every Route: only plain ones are passed on here
			}
			if routesDone {
				continue // a Route below sipedge's: passed as it came
			}
			if !ours {
				routesDone = true
				if a.nroutes == 0 {
					return false // no sipedge route first: the parsed path decides
				}
				continue
			}
			a.routes[a.nroutes], a.tokens[a.nroutes] = i, tok
			if a.nroutes++; a.nroutes == 2 {
				routesDone = true
			}
			continue
		}
		if len(name) == 1 {
			return false // compact forms: the parsed path
		}
		class := headerClass(name)
		if class == hDecline {
			return false
		}
		seen[class]++
		if class != hVia && class != hOther && seen[class] > 1 {
			return false
		}
		switch class {
		case hVia:
			if a.topVia >= 0 {
				continue
			}
			if !plainVia(value) || bytes.Contains(value, []byte("received=")) {
				return false
			}
			if at := bytes.Index(value, []byte(";rport")); at >= 0 && emptyRport(line) < 0 {
				return false // an rport with a value: the parsed path
			}
			if semi := bytes.IndexByte(value, ';'); semi < 0 || bytes.ContainsAny(value[semi:], " \t") {
				return false // no parameters, or blanks among them: sipgo reads those its own way
			}
			a.branch = viaParam(value, "branch")
			a.viaHost = viaSentByHost(value)
			a.topVia = i
		case hFrom, hTo:
			if !plainAddress(value) {
				return false
			}
			tag := tagOf(value)
			if tag == nil {
				return false
			}
			if at := cap(value) - cap(tag); at < 4 || string(value[at-4:at]) != "tag=" {
				return false // sipgo reads "Tag=" as no tag
			}
			if class == hFrom {
				a.fromTag = tag
			} else {
				a.toTag = tag
			}
		case hCallID:
			if len(value) == 0 {
				return false
			}
			a.callID = value
		case hCSeq:
			sp := bytes.IndexByte(value, ' ')
			if sp <= 0 || sp > 10 || !digits(value[:sp]) || string(trimSPHT(value[sp:])) != "ACK" {
				return false
			}
			n, err := strconv.ParseUint(string(value[:sp]), 10, 32)
			if err != nil || n > 1<<31-1 {
				return false
			}
			a.cseq = uint32(n)
		case hMaxForwards:
			if len(value) == 0 || len(value) > 3 || !digits(value) {
				return false
			}
			a.mf, _ = strconv.Atoi(string(value))
			if a.mf == 0 {
				return false
			}
			a.maxFwd = i
		case hContact:
			if !plainAddress(value) {
				return false // sipgo parses Contact: anything unusual is its to judge
			}
		case hContentType:
			return false // a body: the parsed path (anchoring may need it)
		case hContentLength:
			if len(value) == 0 || len(value) > 5 || !digits(value) {
				return false
			}
			clen, _ = strconv.Atoi(string(value))
		}
	}
	a.noLength = seen[hContentLength] == 0
	return a.topVia >= 0 && a.maxFwd >= 0 && a.nroutes > 0 && a.fromTag != nil && a.toTag != nil &&
		a.callID != nil && a.cseq > 0 && len(a.branch) > 0 && len(a.viaHost) > 0 &&
		len(rest) == 0 && (clen == 0 || clen == -1 && seen[hContentLength] == 0)
}

// uriPort is the port of a plain sip: URI (0 without one), as sipgo reads it.
func uriPort(u []byte) int {
	u = u[len("sip:"):]
	if at := bytes.IndexByte(u, '@'); at >= 0 {
		u = u[at+1:]
	}
	if semi := bytes.IndexByte(u, ';'); semi >= 0 {
		u = u[:semi]
	}
	c := bytes.IndexByte(u, ':')
	if c < 0 {
		return 0
	}
	n, _ := strconv.Atoi(string(u[c+1:]))
	return n
}

// viaSentByHost is the host of a plain Via value's sent-by.
func viaSentByHost(v []byte) []byte {
	v = v[len("SIP/2.0/"):]
	sp := bytes.IndexAny(v, " \t")
	v = trimSPHT(v[sp:])
	end := 0
	for end < len(v) && v[end] != ';' && v[end] != ':' && v[end] != ' ' && v[end] != '\t' {
		end++
	}
	return v[:end]
}

// ourRouteValue reads one Route value "<sip:…;se=token…>": ok false for
// anything the parsed path could read differently (a list, no angle
// brackets, an unusual URI); ours when its URI carries sipedge's route
// parameter.
func ourRouteValue(v []byte) (token []byte, ours, ok bool) {
	if len(v) < 2 || v[0] != '<' || bytes.IndexByte(v, ',') >= 0 {
		return nil, false, false
	}
	gt := bytes.IndexByte(v, '>')
	if gt < 0 || bytes.LastIndexByte(v, '>') != gt || bytes.LastIndexByte(v, '<') != 0 {
		return nil, false, false
	}
	uri := v[1:gt]
	if _, _, ok := plainSIPURI(uri); !ok {
		return nil, false, false
	}
	for _, c := range v[gt+1:] {
		if !tokenChar(c) && c != ';' && c != '=' && c != ' ' && c != '\t' {
			return nil, false, false
		}
	}
	params := uri
	for {
		semi := bytes.IndexByte(params, ';')
		if semi < 0 {
			return nil, false, true
		}
		params = params[semi+1:]
		kv := params
		if e := bytes.IndexByte(kv, ';'); e >= 0 {
			kv = kv[:e]
		}
		if len(kv) == 0 {
			return nil, false, false // an empty parameter: the parsed path
		}
		if len(kv) > len(routeParam) && kv[len(routeParam)] == '=' && string(kv[:len(routeParam)]) == routeParam {
			if tok := kv[len(routeParam)+1:]; base64URL(tok) {
				return tok, true, true
			}
			return nil, false, false
		}
		if string(kv) == routeParam {
			return nil, false, false // a valueless se: the parsed path
		}
	}
}

// base64URL: a non-empty run of the unpadded base64url alphabet (a
// route token as Encode writes it).
func base64URL(b []byte) bool {
	for _, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return len(b) > 0
}

// rawLoopHash is loopHash over an ACK's bytes.
func rawLoopHash(a *rawAck) uint64 {
	h := fnvOffset
	h.field(unsafeString(a.ruriUser))
	h.field(unsafeString(a.ruriHost))
	h.number(int64(a.ruriPort))
	h.field(unsafeString(a.fromTag))
	h.field(unsafeString(a.toTag))
	h.field(unsafeString(a.callID))
	h.number(int64(a.cseq))
	return uint64(h)
}

// rawAckOK reports whether this proxy's set-up lets ACKs take the raw
// path at all: no media anchoring and one UDP/TCP listen address (so the
// ACK leaves from the socket it came in on, named in the Via as
// firstAddr).
func (p *Proxy) rawAckOK() bool {
	return p.media == nil && len(p.extra) == 0 && len(p.secure) <= 1 && !isV6Host(p.advHost) && p.udpw != nil
}

// forwardRawACK forwards an ACK of a 2xx from its bytes and reports
// whether it did; false leaves data to sipgo with nothing done.
func (p *Proxy) forwardRawACK(info sip.TransportReadProps, data []byte) bool {
	if info.Transport != "UDP" || !bytes.HasPrefix(data, ackPrefix) || !p.rawAckOK() {
		return false
	}
	src, ok := udpAddrOf(info.RemoteAddr) // srcaddr.go
	if !ok || src.IP.To4() == nil {
		return false
	}
	var a rawAck
	if !scanRawAck(data, &a) {
		return false
	}
	id := unsafeString(a.callID) // looked up only, never kept
	if p.seq.hasKey(id, a.cseq, sip.INVITE, unsafeString(a.branch)) {
		return false // the ACK of a non-2xx answer: its INVITE transaction's
	}
	// ourRoute: the top one or two sipedge entries; the last one decoded
	// gives the state.
	var st routeState
	oldKeys := 0 // tokens signed with the previous secret, counted once forwarded
	for i := 0; i < a.nroutes; i++ {
		s, key, err := p.signer.decode(unsafeString(a.tokens[i]))
		if err != nil {
			return false // counted and logged by the parsed path
		}
		if st = s; key > 0 {
			oldKeys++
		}
	}
	next := hop{addr: st.PeerAddr, transport: st.PeerTransport}
	if string(a.fromTag) == st.FromTag {
		next = hop{addr: st.NodeAddr, transport: st.NodeTransport}
	}
	if next.transport != "udp" {
		return false
	}
	dest, err := netip.ParseAddrPort(next.addr)
	if err != nil {
		return false // a host name: sipgo resolves it
	}
	buf := renderPool.Get().(*bytes.Buffer)
	defer renderPool.Put(buf)
	buf.Reset()
	p.appendRawAck(buf, &a, src)
	if buf.Len() > sip.UDPMTUSize-200 {
		return false // sipgo refuses it the same way
	}
	if oldKeys > 0 && p.metrics != nil {
		p.metrics.routeOldSecret.Add(float64(oldKeys))
	}
	p.metrics.countRequest(sip.ACK)
	if p.limits != nil {
		p.limits.acked(id)
	}
	p.metrics.rawACKs.Inc()
	if err := writeUDP(p.udpAt(info.LocalAddr), buf.Bytes(), dest); err != nil {
		p.metrics.forwardErrors.WithLabelValues("ACK").Inc()
		p.notSent("ACK", string(a.callID), 0, err)
	}
	return true
}

// appendRawAck writes the forwarded ACK: the request line as it came,
// sipedge's Via, then every header line but sipedge's Route entries, the
// sender's Via marked (received, rport) and Max-Forwards decremented.
func (p *Proxy) appendRawAck(buf *bytes.Buffer, a *rawAck, src *net.UDPAddr) {
	var num [64]byte
	buf.Write(a.requestLine)
	buf.WriteString("Via: SIP/2.0/UDP ")
	buf.WriteString(p.advHost)
	buf.WriteByte(':')
	buf.Write(strconv.AppendInt(num[:0], int64(p.advPort), 10))
	buf.WriteString(";branch=")
	buf.Write(appendStatelessBranch(num[:0], rawLoopHash(a), unsafeString(a.branch)))
	buf.WriteString("\r\n")
	for i := 0; i < a.nlines; i++ {
		line := a.lines[i]
		switch {
		case a.nroutes > 0 && i == a.routes[0], a.nroutes > 1 && i == a.routes[1]:
			continue
		case i == a.maxFwd:
			buf.WriteString("Max-Forwards: ")
			buf.Write(strconv.AppendInt(num[:0], int64(a.mf-1), 10))
		case i == a.topVia:
			ip, _ := src.IP.AppendText(num[:0])
			line = trimSPHT(line)
			if at := emptyRport(line); at >= 0 {
				// markReceived: rport gets the source port, received its IP.
				buf.Write(line[:at])
				buf.WriteByte('=')
				buf.Write(strconv.AppendInt(num[len(ip):len(ip)], int64(src.Port), 10))
				buf.Write(line[at:])
				buf.WriteString(";received=")
				buf.Write(ip)
			} else {
				buf.Write(line)
				if !bytes.Equal(a.viaHost, ip) {
					buf.WriteString(";received=")
					buf.Write(ip)
				}
			}
		default:
			buf.Write(line)
		}
		buf.WriteString("\r\n")
	}
	if a.noLength {
		buf.WriteString("Content-Length: 0\r\n")
	}
	buf.WriteString("\r\n")
}
