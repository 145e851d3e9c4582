package proxy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Sanity checks in the spirit of Kamailio's sanity module, with the
// answers RFC 3261 and RFC 4475 ask for. Two layers:
//
//   - insane checks a request sipgo parsed (version, Proxy-Require,
//     single-valued headers, Request-URI scheme and headers);
//   - rejectRaw answers a request sipgo could not parse at all, straight
//     from its bytes, when its request line and a Via can be read.

// singleValued are the headers a request carries at most once (RFC 3261
// §7.3.1, §20): two of them make the request ambiguous (RFC 4475 multi01,
// mcl01).
var singleValued = [...]string{"Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type"}

// insane answers a request that must not be proxied and reports whether
// it did. The caller stops when it returns true.
func (p *Proxy) insane(req *sip.Request, tx sip.ServerTransaction) bool {
	code, reason, unsupported := sanity(req)
	if code == 0 {
		return false
	}
	p.metrics.malformed.WithLabelValues(reason).Inc()
	p.log.Debug().Str("call_id", callID(req)).Int("code", code).Str("reason", reason).Msg("request refused by sanity checks")
	res := sip.NewResponseFromRequest(req, code, sanityReason(code, reason), nil)
	res.SipVersion = "SIP/2.0" // never echo another version (badvers)
	if unsupported != "" {
		res.AppendHeader(sip.NewHeader("Unsupported", unsupported))
	}
	p.respond(tx, res)
	return true
}

// sanity returns the answer a request needs (0 if it may be proxied),
// the reason counted and, for 420, the Unsupported value.
func sanity(req *sip.Request) (code int, reason, unsupported string) {
	if !strings.EqualFold(req.SipVersion, "SIP/2.0") {
		return 505, "SIP version", ""
	}
	switch strings.ToLower(req.Recipient.Scheme) {
	case "sip", "sips", "tel":
	default:
		return 416, "Request-URI scheme", ""
	}
	if len(req.Recipient.Headers) > 0 {
		// RFC 4475 escruri: headers belong in a URI, never in a Request-URI.
		return 400, "Request-URI with headers", ""
	}
	// One pass over the headers: duplicates of single-valued ones, and
	// the option tags of Proxy-Require (sipedge implements no proxy
	// extension, RFC 3261 §16.3 item 6 / §20.29).
	var seen [len(singleValued)]uint8
	var tags []string
	for _, h := range req.Headers() {
		name := h.Name()
		if i := singleIndex(name); i >= 0 {
			if seen[i]++; seen[i] > 1 {
				return 400, "multiple " + singleValued[i], ""
			}
			continue
		}
		if !req.IsCancel() && strings.EqualFold(name, "Proxy-Require") { // never refuse a CANCEL (§8.2.2.3)
			for _, t := range strings.Split(h.Value(), ",") {
				if t = strings.TrimSpace(t); t != "" {
					tags = append(tags, t)
				}
			}
		}
	}
	if len(tags) > 0 {
		return 420, "Proxy-Require", strings.Join(tags, ", ")
	}
	return 0, "", ""
}

// singleIndex is the index of name in singleValued, -1 if absent.
func singleIndex(name string) int {
	for i, n := range singleValued {
		if len(n) == len(name) && (n == name || strings.EqualFold(n, name)) {
			return i
		}
	}
	return -1
}

func sanityReason(code int, reason string) string {
	switch code {
	case 505:
		return "Version Not Supported"
	case 416:
		return "Unsupported URI Scheme"
	case 420:
		return "Bad Extension"
	}
	return "Bad Request (" + reason + ")"
}

// rejectRaw answers a message sipgo could not parse (perr is its error).
// A response is dropped; a request is answered statelessly through send
// when its request line and a Via can be read, and dropped otherwise.
// Everything is counted.
func (p *Proxy) rejectRaw(data []byte, perr string, send func([]byte) error) {
	id := rawCallID(data)
	// Counted as "unparsable" already (slog bridge); answered ones are
	// counted again as "unparsable answered".
	if bytes.HasPrefix(data, []byte("SIP/")) {
		p.log.Debug().Str("call_id", id).Str("error", perr).Msg("unparsable response dropped")
		return
	}
	code, reason := rawVerdict(data, perr)
	out := rawResponse(data, code, reason, p.opts.UserAgent)
	if out == nil {
		p.log.Debug().Str("call_id", id).Str("error", perr).Msg("unparsable request without a readable request line and Via dropped")
		return
	}
	p.metrics.malformed.WithLabelValues("unparsable answered").Inc()
	p.log.Debug().Str("call_id", id).Str("error", perr).Int("code", code).Msg("unparsable request answered")
	if err := send(out); err != nil {
		p.notSent(strconv.Itoa(code), id, code, err)
	}
}

// refuseRaw answers 400 to a request rawSanity refused.
func (p *Proxy) refuseRaw(data []byte, why string, send func([]byte) error) {
	id := rawCallID(data)
	p.metrics.malformed.WithLabelValues(why).Inc()
	p.log.Debug().Str("call_id", id).Str("reason", why).Msg("malformed request rejected")
	if out := rawResponse(data, 400, "Bad Request ("+why+")", p.opts.UserAgent); out != nil {
		if err := send(out); err != nil {
			p.notSent("400", id, 400, err)
		}
	}
}

// rawVerdict picks the answer for an unparsable request from its request
// line: 505 for another SIP version, 416 for a URI scheme sipedge does not
// serve, else 400 with sipgo's error as the reason.
func rawVerdict(data []byte, perr string) (int, string) {
	line := firstLine(data)
	if i := strings.LastIndexByte(line, ' '); i > 0 {
		if v := line[i+1:]; strings.HasPrefix(strings.ToUpper(v), "SIP/") && !strings.EqualFold(v, "SIP/2.0") {
			return 505, "Version Not Supported"
		}
	}
	if f := strings.Fields(line); len(f) == 3 {
		if i := strings.IndexByte(f[1], ':'); i > 0 && schemeToken(f[1][:i]) {
			switch strings.ToLower(f[1][:i]) {
			case "sip", "sips", "tel":
			default:
				return 416, "Unsupported URI Scheme"
			}
		}
	}
	return 400, "Bad Request (" + printable(perr, 80) + ")"
}

func schemeToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' && i > 0 || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return s != ""
}

// printable keeps a reason phrase to visible ASCII and max bytes.
func printable(s string, max int) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < max; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b = append(b, c)
		}
	}
	return string(b)
}

func firstLine(data []byte) string {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		data = data[:i]
	}
	return strings.TrimRight(string(data), "\r")
}

// rawLines returns the unfolded header lines of data (start line excluded).
func rawLines(data []byte) []string {
	end := bytes.Index(data, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(data)
	}
	var lines []string
	for i, l := range strings.Split(string(data[:end]), "\n") {
		l = strings.TrimRight(l, "\r")
		if i == 0 {
			continue
		}
		if l != "" && (l[0] == ' ' || l[0] == '\t') && len(lines) > 0 {
			lines[len(lines)-1] += " " + strings.TrimSpace(l)
			continue
		}
		if l == "" {
			break
		}
		lines = append(lines, l)
	}
	return lines
}

// headerName returns the canonical long name of a raw header line ("" if
// it has no colon).
func headerName(line string) string {
	i := strings.IndexByte(line, ':')
	if i <= 0 {
		return ""
	}
	n := strings.ToLower(strings.TrimSpace(line[:i]))
	switch n {
	case "v":
		return "via"
	case "f":
		return "from"
	case "t":
		return "to"
	case "i":
		return "call-id"
	case "l":
		return "content-length"
	}
	return n
}

// rawCallID returns the Call-ID (or its compact form "i") of the raw
// message in data, "" if absent. Used for log fields only.
func rawCallID(data []byte) string {
	for _, l := range rawLines(data) {
		if headerName(l) == "call-id" {
			return printable(strings.TrimSpace(l[strings.IndexByte(l, ':')+1:]), 200)
		}
	}
	return ""
}

// rawResponse builds a stateless response to the request in data, copying
// its Via, From, To, Call-ID and CSeq lines (RFC 3261 §8.2.6.2); nil when
// the request line or every Via is unreadable.
func rawResponse(data []byte, code int, reason, server string) []byte {
	line := firstLine(data)
	if len(strings.Fields(line)) < 2 || strings.HasPrefix(line, "SIP/") {
		return nil
	}
	var b strings.Builder
	b.WriteString("SIP/2.0 " + strconv.Itoa(code) + " " + reason + "\r\n")
	vias := 0
	for _, l := range rawLines(data) {
		switch n := headerName(l); n {
		case "via":
			if !strings.HasPrefix(strings.ToUpper(strings.Join(strings.Fields(l[strings.IndexByte(l, ':')+1:]), "")), "SIP/2.0/") {
				continue
			}
			vias++
			b.WriteString(l + "\r\n")
		case "to":
			if !hasTagParam(l) {
				var rnd [4]byte
				_, _ = rand.Read(rnd[:])
				l += ";tag=sE" + hex.EncodeToString(rnd[:])
			}
			b.WriteString(l + "\r\n")
		case "from", "call-id", "cseq":
			b.WriteString(l + "\r\n")
		}
	}
	if vias == 0 {
		return nil
	}
	if server != "" {
		b.WriteString("Server: " + server + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}

// rawSanity runs the checks that need the bytes as they came (sipgo's
// parser loses the difference) on one whole message, in place. It returns
// the message's new length and, if it must be refused, the reason:
//
//   - an unquoted display name with characters outside token (RFC 4475
//     baddn) is refused;
//   - LWS around the '=' of a From/To tag (legal, RFC 4475 wsinv) is
//     removed, so the tag is read as a tag.
//
// Only From and To lines are looked at; nothing is allocated.
func rawSanity(msg []byte) (int, string) {
	hdrEnd := bytes.Index(msg, crlfcrlf)
	if hdrEnd < 0 {
		hdrEnd = len(msg)
	}
	i := bytes.IndexByte(msg[:hdrEnd], '\n') + 1 // skip the start line
	if i <= 0 {
		return len(msg), ""
	}
	for i < hdrEnd {
		j := bytes.IndexByte(msg[i:hdrEnd], '\n')
		end := hdrEnd
		if j >= 0 {
			end = i + j
		}
		// the field runs on over folded lines
		for end+1 < hdrEnd && (msg[end+1] == ' ' || msg[end+1] == '\t') {
			if k := bytes.IndexByte(msg[end+1:hdrEnd], '\n'); k >= 0 {
				end = end + 1 + k
			} else {
				end = hdrEnd
			}
		}
		if isFromTo(msg[i:end]) {
			line := msg[i:end]
			if displayNameBad(line) {
				return len(msg), "display name"
			}
			if cut := compactTag(line); cut > 0 {
				copy(msg[end-cut:], msg[end:])
				msg = msg[:len(msg)-cut]
				hdrEnd -= cut
				end -= cut
			}
		}
		i = end + 1
	}
	return len(msg), ""
}

func isFromTo(line []byte) bool {
	c := bytes.IndexByte(line, ':')
	if c <= 0 {
		return false
	}
	n := bytes.TrimSpace(line[:c])
	return bytes.EqualFold(n, []byte("from")) || bytes.EqualFold(n, []byte("to")) ||
		(len(n) == 1 && (n[0]|0x20 == 'f' || n[0]|0x20 == 't'))
}

// displayNameBad: name-addr whose display name is neither a quoted string
// nor tokens separated by LWS.
func displayNameBad(line []byte) bool {
	v := bytes.TrimSpace(line[bytes.IndexByte(line, ':')+1:])
	lt := bytes.IndexByte(v, '<')
	if lt <= 0 || v[0] == '"' {
		return false
	}
	for _, c := range v[:lt] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			bytes.IndexByte([]byte("-.!%*_+`'~ \t\r\n"), c) >= 0) {
			return true
		}
	}
	return false
}

// compactTag removes the LWS around a "tag" parameter (";  tag = x"
// becomes ";tag=x") in line, in place, shifting the line's tail left, and
// returns how many bytes the line got shorter.
func compactTag(line []byte) int {
	cut := 0
	for i := 0; i+3 <= len(line)-cut; i++ {
		l := line[:len(line)-cut]
		if !(l[i]|0x20 == 't' && l[i+1]|0x20 == 'a' && l[i+2]|0x20 == 'g') {
			continue
		}
		k := i - 1 // preceded by ';' and LWS only
		for k >= 0 && isLWS(l[k]) {
			k--
		}
		if k < 0 || l[k] != ';' {
			continue
		}
		e := i + 3
		for e < len(l) && isLWS(l[e]) {
			e++
		}
		if e >= len(l) || l[e] != '=' {
			continue
		}
		v := e + 1
		for v < len(l) && isLWS(l[v]) {
			v++
		}
		shift := (v - (k + 1)) - len("tag=")
		if shift == 0 {
			continue // already ";tag="
		}
		copy(l[k+1:], "tag=")
		copy(l[k+1+len("tag="):], l[v:])
		cut += shift
		i = k + len("tag=")
	}
	return cut
}

func isLWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// hasTagParam reports whether a raw To line carries a tag parameter: a
// ";tag=" (any case, LWS allowed) among the header's parameters, that is
// after the name-addr's '>' when there is one, so "tag" in a display name
// or URI ("Stage" <sip:vintage@b>) is not taken for one.
func hasTagParam(line string) bool {
	v := line[strings.IndexByte(line, ':')+1:]
	if i := strings.LastIndexByte(v, '>'); i >= 0 {
		v = v[i+1:]
	}
	return strings.Contains(strings.ToLower(strings.Join(strings.Fields(v), "")), ";tag=")
}
