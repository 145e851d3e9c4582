package proxy

import "github.com/emiago/sipgo/sip"

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
func newParser() *sip.Parser { return sip.NewParser(sip.WithHeadersParsers(headerParsers())) }

// headerParsers is newParser's table: sipgo's, with the changes above.
func headerParsers() map[string]sip.HeaderParser {
	hp := make(map[string]sip.HeaderParser, len(sip.DefaultHeadersParser())+1)
	for k, v := range sip.DefaultHeadersParser() {
		hp[k] = v
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
