package proxy

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Contact stays a generic header (parser.go): sipedge reads a Contact
// only when it sends in a dialog itself (its own BYEs, the ACK of a late
// 2xx), so the dialog record keeps each leg's Contact header as it came
// and contactURI parses it then, not for every message relayed.

// contactOf is msg's first Contact header, nil without one.
func contactOf(msg interface{ Headers() []sip.Header }) sip.Header {
	for _, h := range msg.Headers() {
		if _, ok := h.(*sip.ContactHeader); ok || h.Name() == "Contact" {
			return h
		}
	}
	return nil
}

// contactURI is the URI of a Contact header's first entry (typed, or
// generic as the listeners' parser leaves it); false when there is none
// or it does not parse.
func contactURI(h sip.Header) (sip.Uri, bool) {
	switch c := h.(type) {
	case nil:
		return sip.Uri{}, false
	case *sip.ContactHeader:
		return *c.Address.Clone(), true
	}
	var uri sip.Uri
	var params sip.HeaderParams
	if _, err := sip.ParseAddressValue(firstEntry(h.Value()), &uri, &params); err != nil {
		return sip.Uri{}, false
	}
	return uri, true
}

// firstEntry is the first of a header value's comma-separated entries: a
// comma inside <…> or "…" does not separate.
func firstEntry(v string) string {
	inAngle, inQuote := false, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == '<':
			inAngle = true
		case c == '>':
			inAngle = false
		case c == ',' && !inAngle:
			return strings.TrimSpace(v[:i])
		}
	}
	return strings.TrimSpace(v)
}
