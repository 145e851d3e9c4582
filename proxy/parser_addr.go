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
	return &v.h, parseAddr(text, &v.h.DisplayName, &v.h.Address, &v.h.Params, v.kv[:0])
}

func parseTo(_ []byte, text string) (sip.Header, error) {
	v := &toWithParams{}
	return &v.h, parseAddr(text, &v.h.DisplayName, &v.h.Address, &v.h.Params, v.kv[:0])
}

// parseAddr is sipgo's parse of a From or To value into its fields, the
// parameters appended to room (nil when there are none, as sipgo leaves
// them).
func parseAddr(text string, display *string, uri *sip.Uri, params *sip.HeaderParams, room sip.HeaderParams) error {
	*params = room
	var err error
	*display, err = sip.ParseAddressValue(text, uri, params)
	if len(*params) == 0 {
		*params = nil
	}
	if err != nil {
		return err
	}
	if uri.Wildcard {
		return fmt.Errorf("wildcard uri not permitted in to: header: %s", text)
	}
	return nil
}
