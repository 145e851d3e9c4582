package proxy

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Header lookups by name that allocate nothing. sipgo's GetHeader lowers
// the name asked for and the name of every header it passes that is not
// one of its common ones (User-Agent, Allow, X-…): one allocation each, and
// the proxy asks for five X-Sipedge-* names of every request and response.

// findHeader is the first header of m named name, in any case.
func findHeader(m interface{ Headers() []sip.Header }, name string) sip.Header {
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			return h
		}
	}
	return nil
}

// firstTrusted is the first X-Sipedge-* header of m, in any case.
func firstTrusted(m interface{ Headers() []sip.Header }) sip.Header {
	for _, h := range m.Headers() {
		n := h.Name()
		if len(n) < len("X-Sipedge-") || !strings.EqualFold(n[:len("X-Sipedge-")], "X-Sipedge-") {
			continue
		}
		for _, t := range trustedHeaders {
			if strings.EqualFold(n, t) {
				return h
			}
		}
	}
	return nil
}
