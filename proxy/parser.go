package proxy

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// newParser is the SIP parser of every listener: sipgo's own, except for
// the headers sipedge and sipgo's transaction layer never read as typed
// values, which stay generic (name and value as they came, relayed
// verbatim). A typed header costs its parse (the value's URI and
// parameters, two to four allocations) and, on every send, its rendering
// (net.ParseIP of the host, strconv.Itoa of the port, a strings.Builder
// for the URI parameters); a generic one costs its value string and the
// header.
//
// Record-Route: sipedge's own is generic already (newRecordRoute); the
// node's 2xx echoes it back and it is relayed upstream unread. The
// dialog's route set lives in the route state of sipedge's own entry, read
// from the in-dialog requests' Route headers, which stay typed.
//
// Contact: sipedge reads it only to send in a dialog itself (contact.go);
// sipgo reads it only in its dialog client and server, which the proxy
// does not use.
//
// unreadHeaders: sipgo has no parser for them and keeps each under its
// name as it came, a string of its own (besides the lowered copy it looks
// the parser up with); with one, the name is the canonical constant.
func newParser() *sip.Parser { return sip.NewParser(sip.WithHeadersParsers(headerParsers())) }

// unreadHeaders are common headers of INVITEs and their answers that
// neither sipedge nor sipgo reads (lookups by name ignore case:
// lookup.go). Compact forms (Supported "k", Subject "s") stay as they
// came: their canonical name is longer.
var unreadHeaders = []string{
	"User-Agent", "Server", "Allow", "Supported", "Subject", "Accept", "Allow-Events", "Date",
	"Organization", "Session-Expires", "Min-SE", "P-Asserted-Identity", "Privacy",
}

// headerParsers is newParser's table: sipgo's, with the changes above.
func headerParsers() map[string]sip.HeaderParser {
	hp := make(map[string]sip.HeaderParser, len(sip.DefaultHeadersParser())+len(unreadHeaders))
	for k, v := range sip.DefaultHeadersParser() {
		hp[k] = v
	}
	for _, name := range unreadHeaders {
		hp[strings.ToLower(name)] = genericHeader(name)
	}
	hp["via"], hp["v"] = viaParser(hp["via"]), viaParser(hp["v"]) // parser_via.go
	hp["from"], hp["f"] = parseFrom, parseFrom                    // parser_addr.go
	hp["to"], hp["t"] = parseTo, parseTo
	hp["record-route"] = genericHeader("Record-Route")
	hp["contact"], hp["m"] = genericHeader("Contact"), genericHeader("Contact") // read only by contactURI (contact.go)
	return hp
}

// genericHeader is a HeaderParser that keeps the value as it came, under
// the header's canonical name (sipgo's typed headers are written under
// theirs too, so the wire form does not change).
func genericHeader(name string) sip.HeaderParser {
	return func(_ []byte, value string) (sip.Header, error) {
		return sip.NewHeader(name, value), nil
	}
}
