package proxy

import (
	"fmt"

	"github.com/emiago/sipgo/sip"
)

// From and To parsed as sipgo parses them (parseFromHeader, parseToHeader
// in sipgo v1.7.3: sip.ParseAddressValue, then the wildcard check), with
// room for their parameters in the header's own allocation: sipgo grows
// the list from nil, one allocation for the tag alone.

const addrRoom = 2 // tag, and one more

type fromWithParams struct {
	h  sip.FromHeader
	kv [addrRoom]sip.HeaderKV
}

type toWithParams struct {
	h  sip.ToHeader
	kv [addrRoom]sip.HeaderKV
}

func parseFrom(_ []byte, text string) (sip.Header, error) {
	v := &fromWithParams{}
	h := &v.h
	h.Params = v.kv[:0:addrRoom]
	var err error
	h.DisplayName, err = sip.ParseAddressValue(text, &h.Address, &h.Params)
	if len(h.Params) == 0 {
		h.Params = nil // as sipgo leaves it
	}
	if err != nil {
		return h, err
	}
	if h.Address.Wildcard {
		return h, fmt.Errorf("wildcard uri not permitted in to: header: %s", text)
	}
	return h, nil
}

func parseTo(_ []byte, text string) (sip.Header, error) {
	v := &toWithParams{}
	h := &v.h
	h.Params = v.kv[:0:addrRoom]
	var err error
	h.DisplayName, err = sip.ParseAddressValue(text, &h.Address, &h.Params)
	if len(h.Params) == 0 {
		h.Params = nil
	}
	if err != nil {
		return h, err
	}
	if h.Address.Wildcard {
		return h, fmt.Errorf("wildcard uri not permitted in to: header: %s", text)
	}
	return h, nil
}
