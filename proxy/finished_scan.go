package proxy

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// The byte scan behind the finished table's lookups: a UDP datagram's
// method and its sipgo server transaction key, read before sipgo parses
// it, without allocation. It reads only what the key needs (request line,
// top Via, CSeq) and gives up (ok false) on anything it does not read
// exactly as sipgo's parser would; such a datagram takes sipgo's path.

// rfc3261Cookie starts every RFC 3261 branch (§8.1.1.7).
const rfc3261Cookie = "z9hG4bK"

// rawTx is what the scan found of a request.
type rawTx struct {
	method []byte // of the request line
	key    []byte // sipgo's server transaction key (branch__host__port__CSeq method)
}

// scanServerKey reads the request in data and appends its server
// transaction key to buf (as sipgo's makeServerTxKey builds it; asMethod,
// when set, replaces the CSeq method as sipgo does for a CANCEL). ok is
// false for a response, a top Via branch without the RFC 3261 cookie, or
// anything the scan does not read as sipgo would.
func scanServerKey(data, buf []byte, asMethod string) (rawTx, bool) {
	line, rest, ok := cutLine(data)
	if !ok {
		return rawTx{}, false
	}
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || bytes.HasPrefix(line, []byte("SIP")) { // sipgo reads any "SIP..." line as a response
		return rawTx{}, false
	}
	tx := rawTx{method: line[:sp]}
	if !upperToken(tx.method) {
		// sipgo upper-cases the method ("ack" becomes ACK, a byte that is
		// not UTF-8 becomes U+FFFD); RFC 3261 §7.1 says methods are
		// case-sensitive tokens. Neither reading is taken here.
		return rawTx{}, false
	}
	via, cseq, ok := topViaAndCSeq(rest)
	if !ok {
		return rawTx{}, false
	}
	method, ok := cseqMethod(cseq)
	if !ok {
		return rawTx{}, false
	}
	transport, host, port, branch, ok := scanVia(via)
	if !ok {
		return rawTx{}, false
	}
	key := append(buf[:0], branch...)
	key = append(key, sip.TxSeperator...)
	key = append(key, host...)
	key = append(key, sip.TxSeperator...)
	if port <= 0 {
		port = defaultPortOf(transport)
	}
	key = strconv.AppendInt(key, int64(port), 10)
	key = append(key, sip.TxSeperator...)
	switch {
	case asMethod != "":
		key = append(key, asMethod...)
	case string(method) == "ACK":
		key = append(key, "INVITE"...)
	default:
		key = append(key, method...)
	}
	tx.key = key
	return tx, true
}

// topViaAndCSeq finds the values of the first Via and the first CSeq
// header in the header lines of rest. ok is false when either is missing,
// a line among those read has no colon where a Via or CSeq could be, or
// one of the two is folded onto the next line: what sipgo's parser would
// read differently is not read here.
func topViaAndCSeq(rest []byte) (via, cseq []byte, ok bool) {
	captured := false // the line before was the Via or CSeq taken
	var line []byte
	for len(rest) > 0 && !(via != nil && cseq != nil) {
		line, rest, ok = cutLine(rest)
		if !ok || len(line) == 0 {
			break // end of the headers
		}
		if line[0] == ' ' || line[0] == '\t' {
			if captured {
				return nil, nil, false // a folded Via or CSeq
			}
			continue
		}
		captured = false
		if c := line[0] | 0x20; c != 'v' && c != 'c' { // ASCII lower case
			continue // not a Via or CSeq: not even split
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, nil, false
		}
		name := trimRightBlank(line[:colon])
		value := line[colon+1:]
		switch {
		case via == nil && (bytes.EqualFold(name, []byte("via")) || bytes.EqualFold(name, []byte("v"))):
			via, captured = value, true
		case cseq == nil && bytes.EqualFold(name, []byte("cseq")):
			cseq, captured = value, true
		}
	}
	if via == nil || cseq == nil {
		return nil, nil, false
	}
	if captured && len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		return nil, nil, false // the header taken last is folded onto the next line
	}
	return via, cseq, true
}

// cutLine splits data at its first CRLF (a bare LF is not a line end here).
func cutLine(data []byte) (line, rest []byte, ok bool) {
	for off := 0; ; {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			return nil, nil, false
		}
		i += off
		if i > 0 && data[i-1] == '\r' {
			return data[:i-1], data[i+1:], true
		}
		off = i + 1
	}
}

// trimRightBlank drops trailing spaces and tabs.
func trimRightBlank(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// cseqMethod is the method of a CSeq value (" 1 INVITE").
// sipgo takes everything after the first blank as the method.
func cseqMethod(v []byte) ([]byte, bool) {
	v = bytes.TrimSpace(v)
	sp := bytes.IndexAny(v, " \t")
	if sp <= 0 {
		return nil, false
	}
	for _, c := range v[:sp] {
		if c < '0' || c > '9' {
			return nil, false
		}
	}
	m := v[sp+1:] // sipgo takes all after the first blank: one blank only, or not read here
	if len(m) == 0 || bytes.ContainsAny(m, " \t") {
		return nil, false
	}
	return m, true
}

// scanVia reads the first value of a Via header:
// SIP/2.0/<transport> <host>[:<port>];params. It takes only values whose
// sent-by sipgo reads the same way (no LWS inside it, a numeric port) and
// whose branch carries the RFC 3261 cookie.
func scanVia(v []byte) (transport, host []byte, port int, branch []byte, ok bool) {
	v = bytes.TrimLeft(v, " \t")
	proto, rest, found := bytes.Cut(v, []byte("/"))
	if !found || !bytes.Equal(bytes.TrimSpace(proto), []byte("SIP")) {
		return nil, nil, 0, nil, false
	}
	ver, rest, found := bytes.Cut(rest, []byte("/"))
	if !found || !bytes.Equal(bytes.TrimSpace(ver), []byte("2.0")) {
		return nil, nil, 0, nil, false
	}
	sp := bytes.IndexAny(rest, " \t")
	if sp <= 0 {
		return nil, nil, 0, nil, false
	}
	transport = rest[:sp]
	rest = bytes.TrimLeft(rest[sp:], " \t")
	semi := bytes.IndexByte(rest, ';')
	if semi <= 0 {
		return nil, nil, 0, nil, false // no parameters: no branch
	}
	sentBy, params := rest[:semi], rest[semi+1:]
	if bytes.ContainsAny(sentBy, " \t,") {
		return nil, nil, 0, nil, false
	}
	portText := []byte(nil)
	if sentBy[0] == '[' {
		end := bytes.IndexByte(sentBy, ']')
		if end < 0 {
			return nil, nil, 0, nil, false
		}
		host = sentBy[1:end]
		switch after := sentBy[end+1:]; {
		case len(after) == 0:
		case after[0] == ':':
			portText = after[1:]
		default:
			return nil, nil, 0, nil, false
		}
	} else if c := bytes.LastIndexByte(sentBy, ':'); c >= 0 {
		host, portText = sentBy[:c], sentBy[c+1:]
	} else {
		host = sentBy
	}
	if len(host) == 0 {
		return nil, nil, 0, nil, false
	}
	if portText != nil {
		if len(portText) == 0 || len(portText) > 5 {
			return nil, nil, 0, nil, false
		}
		for _, c := range portText {
			if c < '0' || c > '9' {
				return nil, nil, 0, nil, false
			}
			port = port*10 + int(c-'0')
		}
	}
	// Parameters up to the next Via value.
	if comma := bytes.IndexByte(params, ','); comma >= 0 {
		params = params[:comma]
	}
	for len(params) > 0 {
		var p []byte
		p, params, _ = bytes.Cut(params, []byte(";"))
		name, value, _ := bytes.Cut(p, []byte("="))
		name = bytes.TrimSpace(name) // as sipgo reads parameter names
		if !bytes.Equal(name, []byte("branch")) {
			if bytes.EqualFold(name, []byte("branch")) {
				return nil, nil, 0, nil, false // another case: not read here
			}
			continue
		}
		if len(value) <= len(rfc3261Cookie) || !bytes.HasPrefix(value, []byte(rfc3261Cookie)) ||
			bytes.ContainsAny(value, " \t\"") {
			return nil, nil, 0, nil, false
		}
		return transport, host, port, value, true
	}
	return nil, nil, 0, nil, false
}

// defaultPortOf is sip.DefaultPort without converting the transport to a
// string.
func defaultPortOf(transport []byte) int {
	switch {
	case bytes.EqualFold(transport, []byte("tls")):
		return sip.DefaultTlsPort
	case bytes.EqualFold(transport, []byte("tcp")):
		return sip.DefaultTcpPort
	case bytes.EqualFold(transport, []byte("ws")):
		return sip.DefaultWsPort
	case bytes.EqualFold(transport, []byte("wss")):
		return sip.DefaultWssPort
	case bytes.EqualFold(transport, []byte("udp")):
		return sip.DefaultUdpPort
	}
	return sip.DefaultTcpPort
}

// upperToken: b is an RFC 3261 token without lower-case letters.
func upperToken(b []byte) bool {
	for _, c := range b {
		switch {
		case 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-.!%*_+`'~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
