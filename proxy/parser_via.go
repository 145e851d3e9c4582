package proxy

import (
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// viaParser is sipgo's Via parser with the parameters in the header's own
// allocation (viaWithParams, vias.go): sipgo grows the parameter list
// from nil one append at a time, up to three allocations for a caller's
// Via (branch, rport, received). A Via line holding several values
// (comma) and anything the fast path does not take go to sipgo's parser,
// whose result (and error) then stand; the fast path follows sipgo's
// states step by step (parse_via.go in sipgo v1.7.3), so a Via parses the
// same either way (TestViaParser_AsSipgo, FuzzViaParser).
func viaParser(sipgos sip.HeaderParser) sip.HeaderParser {
	return func(name []byte, text string) (sip.Header, error) {
		if h, ok := parseViaFast(text); ok {
			return h, nil
		}
		return sipgos(name, text)
	}
}

func parseViaFast(s string) (*sip.ViaHeader, bool) {
	if strings.IndexByte(s, ',') >= 0 {
		return nil, false
	}
	v := &viaWithParams{}
	h := &v.h
	ind := strings.IndexRune(s, '/')
	if ind < 0 {
		return nil, false
	}
	h.ProtocolName = strings.TrimSpace(s[:ind])
	s = s[ind+1:]
	if ind = strings.IndexRune(s, '/'); ind < 0 {
		return nil, false
	}
	h.ProtocolVersion = strings.TrimSpace(s[:ind])
	s = s[ind+1:]
	if ind = strings.IndexAny(s, " \t"); ind < 0 {
		return nil, false
	}
	h.Transport = strings.TrimSpace(s[:ind])
	s = s[ind+1:]
	params, more, bad := viaHost(h, s)
	if bad {
		return nil, false // sipgo's error
	}
	if !more {
		return h, true // sipgo stops there too, without an error
	}
	h.Params = v.kv[:0:viaRoom]
	if _, err := sip.UnmarshalHeaderParams(params, ';', '\r', &h.Params); err != nil {
		return nil, false
	}
	if len(h.Params) == 0 {
		h.Params = nil // as sipgo leaves it
	}
	return h, true
}

// viaHost is sipgo's viaStateHost: it sets the host and port and returns
// the parameters' text; more is false when parsing ends there, bad when
// sipgo fails the Via.
func viaHost(h *sip.ViaHeader, s string) (params string, more, bad bool) {
	if len(s) > 0 && s[0] == '[' {
		closeIdx := strings.Index(s, "]")
		if closeIdx < 0 {
			return "", false, true
		}
		h.Host = strings.TrimSpace(s[1:closeIdx])
		rest := s[closeIdx+1:]
		if len(rest) == 0 {
			return "", false, false
		}
		if rest[0] == ':' {
			endIdx := strings.IndexByte(rest, ';')
			portStr := rest[1:]
			if endIdx >= 0 {
				portStr = rest[1:endIdx]
			}
			port, err := strconv.Atoi(strings.TrimSpace(portStr))
			if err != nil {
				return "", false, false
			}
			h.Port = port
			if endIdx < 0 {
				return "", false, false
			}
			return rest[endIdx+1:], true, false
		}
		if rest[0] == ';' {
			return rest[1:], true, false
		}
		return "", false, false
	}
	colonInd, endIndex := 0, len(s)
loop:
	for i, c := range s {
		switch c {
		case ';':
			endIndex = i
			break loop
		case ':':
			colonInd = i
		}
	}
	if colonInd > 0 {
		var err error
		h.Port, err = strconv.Atoi(s[colonInd+1 : endIndex])
		if err != nil {
			return "", false, false
		}
		h.Host = strings.TrimSpace(s[:colonInd])
	} else {
		h.Host = strings.TrimSpace(s[:endIndex])
	}
	if endIndex == len(s) {
		return "", false, false
	}
	return s[endIndex+1:], true, false
}
