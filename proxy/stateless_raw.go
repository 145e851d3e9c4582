package proxy

import (
	"bytes"
	"net"
	"strconv"

	"github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/admission"
)

// The stateless path's bytes-only reading (no sipgo parse): a plain new
// dialog request, as callers and load generators send them, is read in
// one pass over its header lines, allocation-free. Anything the stateful
// checks could answer, or anything unusual, declines (scanRaw false) and
// the request is parsed by sipgo and judged as in stateless.go: folded
// lines, a Request-URI other than a plain sip: URI (a scheme sipedge does
// not serve, URI headers, escapes, IPv6 literals), another SIP version, a
// duplicate single-valued header, Proxy-Require, any Route or X-Sipedge-*
// header, a Via with a sipedge branch (the loop check), Max-Forwards 0, a
// missing or tagless From, a To tag, a CSeq of another method, or a
// Content-Length that is not the body's. Headers the answer does not need
// (Contact, Content-Type…) are not validated.

// maxRawVias bounds the Vias read; a request with more is parsed.
const maxRawVias = 8

// rawRequest is what the stateless path reads from a request's bytes:
// slices of data, valid while it is.
type rawRequest struct {
	method             sip.RequestMethod
	ruriUser, ruriHost []byte
	toUser, toHost     []byte
	callID, fromTag    []byte
	branch             []byte // top Via's
	cseq               []byte // CSeq number digits
	vias               [maxRawVias][]byte
	nvias              int
	from, to           []byte // whole header lines, without CRLF
	callIDLine, cseqLn []byte
}

// rawMethod maps the request line's method to sipgo's constant.
func rawMethod(m []byte) (sip.RequestMethod, bool) {
	switch string(m) {
	case "INVITE":
		return sip.INVITE, true
	case "REGISTER":
		return sip.REGISTER, true
	case "SUBSCRIBE":
		return sip.SUBSCRIBE, true
	}
	return "", false
}

// header classes scanRaw tells apart (single-valued ones are counted).
const (
	hOther = iota
	hVia
	hFrom
	hTo
	hCallID
	hCSeq
	hMaxForwards
	hContentLength
	hContentType
	hContact
	hDecline // Route, Proxy-Require, X-Sipedge-*: the parsed path decides
	numH
)

func headerClass(n []byte) int {
	if len(n) == 1 {
		switch n[0] | 0x20 {
		case 'v':
			return hVia
		case 'f':
			return hFrom
		case 't':
			return hTo
		case 'i':
			return hCallID
		case 'l':
			return hContentLength
		case 'c':
			return hContentType
		case 'm':
			return hContact
		}
		return hOther
	}
	switch {
	case bytes.EqualFold(n, []byte("Via")):
		return hVia
	case bytes.EqualFold(n, []byte("From")):
		return hFrom
	case bytes.EqualFold(n, []byte("To")):
		return hTo
	case bytes.EqualFold(n, []byte("Call-ID")):
		return hCallID
	case bytes.EqualFold(n, []byte("CSeq")):
		return hCSeq
	case bytes.EqualFold(n, []byte("Max-Forwards")):
		return hMaxForwards
	case bytes.EqualFold(n, []byte("Content-Length")):
		return hContentLength
	case bytes.EqualFold(n, []byte("Content-Type")):
		return hContentType
	case bytes.EqualFold(n, []byte("Contact")):
		return hContact
	case bytes.EqualFold(n, []byte("Route")), bytes.EqualFold(n, []byte("Proxy-Require")),
		// Headers sipgo parses and this reading does not: sipgo judges them.
		bytes.EqualFold(n, []byte("Record-Route")), bytes.EqualFold(n, []byte("Refer-To")),
		bytes.EqualFold(n, []byte("Referred-By")),
		len(n) >= len("X-Sipedge-") && bytes.EqualFold(n[:len("X-Sipedge-")], []byte("X-Sipedge-")):
		return hDecline
	}
	return hOther
}

// rawRequestLine splits a request's first line, "METHOD URI SIP/2.0"
// written plainly, into its method and Request-URI; rest is what follows
// its CRLF. ok is false for any other shape.
func rawRequestLine(data []byte) (method, uri, rest []byte, ok bool) {
	eol := bytes.Index(data, crlf)
	if eol <= 0 {
		return nil, nil, nil, false
	}
	line := data[:eol]
	if !plainLine(line) {
		return nil, nil, nil, false
	}
	sp1, sp2 := bytes.IndexByte(line, ' '), bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1 || string(line[sp2+1:]) != "SIP/2.0" {
		return nil, nil, nil, false
	}
	return line[:sp1], line[sp1+1 : sp2], data[eol+2:], true
}

// scanRaw reads data into r and reports whether the stateless path may
// judge it from its bytes (see the file comment for what declines).
func scanRaw(data []byte, r *rawRequest) bool {
	method, uri, rest, ok := rawRequestLine(data)
	if !ok {
		return false
	}
	if r.method, ok = rawMethod(method); !ok {
		return false
	}
	if r.ruriUser, r.ruriHost, ok = plainSIPURI(uri); !ok {
		return false
	}
	var seen [numH]int
	clen := -1
	var line []byte
	for {
		eol := bytes.Index(rest, crlf)
		if eol < 0 {
			return false
		}
		line, rest = rest[:eol], rest[eol+2:]
		if len(line) == 0 {
			break // the body follows
		}
		if line[0] == ' ' || line[0] == '\t' {
			return false // folded
		}
		if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, '\n') >= 0 {
			return false // a bare CR or LF: sipgo splits lines differently
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			return false
		}
		class := headerClass(trimSPHT(line[:c]))
		value := trimSPHT(line[c+1:])
		if class != hOther && !plainLine(value) {
			return false // sipgo parses this header: only plain values are read here
		}
		seen[class]++
		if class != hVia && class != hOther && seen[class] > 1 {
			return false // duplicate single-valued header (400), or a declining one
		}
		switch class {
		case hDecline:
			return false
		case hVia:
			if r.nvias == maxRawVias || !plainVia(value) {
				return false
			}
			if r.nvias == 0 {
				r.branch = viaParam(value, "branch")
			}
			r.vias[r.nvias] = line
			r.nvias++
		case hFrom:
			if !plainAddress(value) {
				return false
			}
			if r.fromTag = tagOf(value); r.fromTag == nil {
				return false // missing From tag (400)
			}
			// sipgo reads parameter names as written: "Tag=" is no tag to
			// it, so only "tag=" is read here.
			if at := cap(value) - cap(r.fromTag); at < 4 || string(value[at-4:at]) != "tag=" {
				return false
			}
			r.from = line
		case hTo:
			if !plainAddress(value) {
				return false
			}
			if tagOf(value) != nil {
				return false // in dialog
			}
			if r.toUser, r.toHost, ok = toAOR(value); !ok {
				return false
			}
			r.to = line
		case hCallID:
			if len(value) == 0 {
				return false
			}
			r.callID, r.callIDLine = value, line
		case hCSeq:
			sp := bytes.IndexByte(value, ' ')
			if sp <= 0 || sp > 10 || !digits(value[:sp]) || string(trimSPHT(value[sp:])) != string(r.method) {
				return false
			}
			if n, err := strconv.ParseUint(string(value[:sp]), 10, 32); err != nil || n > 1<<31-1 {
				return false
			}
			r.cseq, r.cseqLn = value[:sp], line
		case hMaxForwards:
			if len(value) == 0 || len(value) > 3 || !digits(value) || len(bytes.TrimLeft(value, "0")) == 0 {
				return false // Max-Forwards 0 (483) or unreadable
			}
		case hContact:
			if !plainAddress(value) {
				return false // sipgo parses Contact: anything unusual is its to judge
			}
		case hContentType:
			if len(value) == 0 {
				return false
			}
		case hContentLength:
			if len(value) == 0 || len(value) > 5 || !digits(value) {
				return false
			}
			clen, _ = strconv.Atoi(string(value))
		}
	}
	// rest is the body: Content-Length must be its length.
	return r.nvias > 0 && r.from != nil && r.to != nil && r.callID != nil && r.cseq != nil &&
		seen[hContentLength] == 1 && clen == len(rest)
}

var crlf = []byte("\r\n")

// plainLine: printable ASCII and tabs only. A bare CR or LF splits lines
// differently in sipgo, and sipgo trims Unicode spaces (bytes.TrimSpace)
// where this reading trims spaces and tabs: such lines are left to sipgo.
func plainLine(line []byte) bool {
	for _, c := range line {
		if !plainByte[c] {
			return false
		}
	}
	return true
}

// plainByte: the bytes plainLine accepts.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = true
	}
	t['\t'] = true
	return t
}()

// trimSPHT trims spaces and tabs at both ends.
func trimSPHT(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// plainURIChars: none of the characters that make a URI other than plain
// (headers, escapes, IPv6 brackets, quoting, whitespace, lists).
func plainURIChars(u []byte) bool {
	for _, c := range u {
		switch c {
		case '?', '%', '[', ']', '<', '>', '"', ' ', '\t', ',':
			return false
		}
	}
	return true
}

func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// plainSIPURI splits a plain "sip:[user@]host[:port][;params]" URI; false
// for anything else (another scheme, a password, URI headers, escapes,
// brackets).
func plainSIPURI(u []byte) (user, host []byte, ok bool) {
	if !bytes.HasPrefix(u, []byte("sip:")) || !plainURIChars(u) {
		return nil, nil, false
	}
	u = u[len("sip:"):]
	if at := bytes.IndexByte(u, '@'); at >= 0 {
		user, u = u[:at], u[at+1:]
		if len(user) == 0 || bytes.IndexByte(user, ':') >= 0 || bytes.IndexByte(user, ';') >= 0 {
			return nil, nil, false
		}
	}
	end := 0
	for end < len(u) && u[end] != ':' && u[end] != ';' {
		end++
	}
	host = u[:end]
	if len(host) == 0 {
		return nil, nil, false
	}
	if end < len(u) && u[end] == ':' {
		port := u[end+1:]
		if i := bytes.IndexByte(port, ';'); i >= 0 {
			port = port[:i]
		}
		if len(port) > 5 || !digits(port) {
			return nil, nil, false
		}
	}
	return user, host, true
}

// plainAddress reports whether a From or To value has the plain shape
// sipgo reads the same way: [display-name tokens] <uri> or a bare uri,
// then ;name[=value] parameters of token characters. Quotes, a second
// angle bracket, commas or anything else unusual decline (sipgo parses it
// and the stateful checks answer).
func plainAddress(v []byte) bool {
	if len(v) > 0 && v[0] == '"' {
		// A quoted display name without escapes, then the <uri>.
		end := bytes.IndexByte(v[1:], '"')
		if end < 0 || bytes.IndexByte(v[1:1+end], '\\') >= 0 {
			return false
		}
		v = trimSPHT(v[end+2:])
		if len(v) == 0 || v[0] != '<' {
			return false
		}
	}
	params := v
	if lt := bytes.IndexByte(v, '<'); lt >= 0 {
		gt := bytes.IndexByte(v, '>')
		if gt < lt || bytes.LastIndexByte(v, '<') != lt || bytes.LastIndexByte(v, '>') != gt {
			return false
		}
		for _, c := range v[:lt] {
			if !tokenChar(c) && c != ' ' && c != '\t' {
				return false
			}
		}
		if _, _, ok := plainSIPURI(v[lt+1 : gt]); !ok {
			return false
		}
		params = v[gt+1:]
	} else if bytes.IndexByte(v, '>') >= 0 || bytes.IndexByte(v, '"') >= 0 {
		return false
	} else {
		uri := v
		if semi := bytes.IndexByte(v, ';'); semi >= 0 {
			uri, params = v[:semi], v[semi:]
		} else {
			params = nil
		}
		if _, _, ok := plainSIPURI(trimSPHT(uri)); !ok {
			return false
		}
	}
	for _, c := range params {
		if !tokenChar(c) && c != ';' && c != '=' && c != ' ' && c != '\t' {
			return false
		}
	}
	return true
}

// tokenChar: RFC 3261 token characters.
func tokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
		return true
	}
	return false
}

// toAOR returns the user and host of a To value's URI.
func toAOR(v []byte) (user, host []byte, ok bool) {
	uri := v
	if lt := bytes.IndexByte(v, '<'); lt >= 0 {
		gt := bytes.IndexByte(v[lt:], '>')
		if gt < 0 {
			return nil, nil, false
		}
		uri = v[lt+1 : lt+gt]
	} else if semi := bytes.IndexByte(v, ';'); semi >= 0 {
		uri = v[:semi]
	}
	user, host, ok = plainSIPURI(bytes.TrimSpace(uri))
	return user, host, ok && len(user) > 0
}

// plainVia reports whether a Via value is one sent-by with parameters:
// "SIP/2.0/<transport> <host>[:port]…", not a list, not sipedge's own
// (a sipedge branch: the loop check decides).
func plainVia(v []byte) bool {
	if len(v) < len("SIP/2.0/UDP h") || !bytes.EqualFold(v[:len("SIP/2.0/")], []byte("SIP/2.0/")) ||
		bytes.IndexByte(v, ',') >= 0 || bytes.Contains(v, []byte(branchMark)) || bytes.IndexByte(v, '"') >= 0 {
		return false
	}
	v = v[len("SIP/2.0/"):]
	sp := bytes.IndexAny(v, " \t")
	if sp <= 0 || !tokens(v[:sp]) {
		return false
	}
	// sent-by: host[:port], then ;name[=value] parameters.
	v = trimSPHT(v[sp:])
	end := bytes.IndexByte(v, ';')
	if end < 0 {
		end = len(v)
	}
	sentBy, params := trimSPHT(v[:end]), v[end:]
	host := sentBy
	if c := bytes.IndexByte(sentBy, ':'); c >= 0 {
		host = sentBy[:c]
		if port := sentBy[c+1:]; len(port) > 5 || !digits(port) {
			return false
		}
	}
	if len(host) == 0 || !tokens(host) {
		return false
	}
	for _, c := range params {
		if !tokenChar(c) && c != ';' && c != '=' && c != ' ' && c != '\t' {
			return false
		}
	}
	return true
}

// tokens: one or more token characters.
func tokens(b []byte) bool {
	for _, c := range b {
		if !tokenChar(c) {
			return false
		}
	}
	return len(b) > 0
}

// viaParam returns the value of parameter name ("branch") of a Via value.
func viaParam(v []byte, name string) []byte {
	for {
		semi := bytes.IndexByte(v, ';')
		if semi < 0 {
			return nil
		}
		v = trimSPHT(v[semi+1:])
		if len(v) > len(name) && v[len(name)] == '=' && string(v[:len(name)]) == name {
			v = v[len(name)+1:]
			end := 0
			for end < len(v) && v[end] != ';' && !isLWS(v[end]) {
				end++
			}
			return v[:end]
		}
	}
}

// emptyRport returns the index just after a valueless ";rport" parameter
// in a Via line, -1 if there is none.
func emptyRport(line []byte) int {
	for off := 0; ; {
		i := bytes.Index(line[off:], []byte(";rport"))
		if i < 0 {
			return -1
		}
		end := off + i + len(";rport")
		if end == len(line) || line[end] == ';' || isLWS(line[end]) {
			return end
		}
		off = end
	}
}

// rejectRawStateless is rejectStateless for a request read by scanRaw:
// the same decisions, in the same order, from its bytes.
func (p *Proxy) rejectRawStateless(r *rawRequest, to slPeer) bool {
	id := string(r.callID)
	if r.method == sip.INVITE && (p.dialogs.HasCall(id) || p.limits.known(id)) {
		return false
	}
	areq := admission.Request{Method: string(r.method), CallID: id, ConfID: string(r.ruriUser)}
	areq.AOR = string(r.toUser) + "@" + string(r.toHost)
	if areq.Key() == "" {
		return false
	}
	v, ok := p.sl.adm.Immediate(areq)
	if !ok {
		return false
	}
	p.metrics.countRequest(r.method)
	var why limitReason
	if p.limits != nil {
		_, why = p.limitRefusalOf(r.method, to.addr.AddrPort(), true, id)
	}
	if a, send := p.statelessAnswer(why, areq, v); send {
		p.sendRaw(r, to, a)
	}
	return true
}

// sendRaw is sendStateless for a request read by scanRaw.
func (p *Proxy) sendRaw(r *rawRequest, to slPeer, a slAnswer) {
	buf := p.sl.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	p.appendRaw(buf, r, to.addr, a.code, a.reason, a.retryAfter, a.contact)
	p.metrics.countStatusOf(r.method, a.code)
	p.metrics.stateless.answers.Inc()
	if _, err := to.conn.WriteTo(buf.Bytes(), to.addr); err != nil {
		p.notSent("response", string(r.callID), a.code, err)
	}
	p.sl.bufs.Put(buf)
}

// appendRaw writes the answer to r as appendStateless does, copying the
// request's lines: its Vias (the top one with rport and received filled
// in when it asks, RFC 3581), From, To with this path's tag, Call-ID and
// CSeq.
func (p *Proxy) appendRaw(buf *bytes.Buffer, r *rawRequest, src *net.UDPAddr, code int, reason string, retryAfter int, contact sip.Header) {
	var num [24]byte
	buf.WriteString("SIP/2.0 ")
	buf.Write(strconv.AppendInt(num[:0], int64(code), 10))
	buf.WriteByte(' ')
	buf.WriteString(reason)
	buf.WriteString("\r\n")
	for i := 0; i < r.nvias; i++ {
		line := trimSPHT(r.vias[i])
		if at := emptyRport(line); i == 0 && at >= 0 {
			buf.Write(line[:at])
			buf.WriteByte('=')
			buf.Write(strconv.AppendInt(num[:0], int64(src.Port), 10))
			buf.Write(line[at:])
			buf.WriteString(";received=")
			ip, _ := src.IP.AppendText(num[:0])
			buf.Write(ip)
		} else {
			buf.Write(line)
		}
		buf.WriteString("\r\n")
	}
	buf.Write(r.from)
	buf.WriteString("\r\n")
	buf.Write(trimSPHT(r.to))
	buf.WriteString(";tag=")
	buf.WriteString(p.sl.tag)
	buf.Write(strconv.AppendUint(num[:0], rawTagHash(r), 16))
	buf.WriteString("\r\n")
	buf.Write(r.callIDLine)
	buf.WriteString("\r\n")
	buf.Write(r.cseqLn)
	buf.WriteString("\r\n")
	if retryAfter >= 0 {
		buf.WriteString("Retry-After: ")
		buf.Write(strconv.AppendInt(num[:0], int64(retryAfter), 10))
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

// rawTagHash is statelessTag's hash over the request's bytes.
func rawTagHash(r *rawRequest) uint64 {
	h := uint64(14695981039346656037)
	for _, s := range [...][]byte{r.callID, r.fromTag, r.cseq, r.branch} {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
		h ^= 0xff
		h *= 1099511628211
	}
	return h
}

// countStatusOf is countStatus by the request's method.
func (m *metrics) countStatusOf(method sip.RequestMethod, code int) {
	class := code/100 - 1
	if class < 0 || class > 5 {
		return
	}
	cs := m.otherResp
	if c, ok := m.responses[method]; ok {
		cs = c
	}
	cs[class].Inc()
}
