package sip

// sipedge patch 5: headers read into numbers without a string of their own.

import (
	"reflect"
	"strings"
	"unsafe"
)

// The parsers of the headers whose values become numbers (and, for CSeq,
// a method, interned below): they keep nothing of the text they are given
// (strconv clones what its errors quote, fmt copies), so ParseHeader hands
// them a view of the line instead of a copy. Only sipgo's own: a parser a
// user put in the table may keep its text, and gets a copy as before.
var noCopyParsers = [...]uintptr{
	reflect.ValueOf(headerParserCSeq).Pointer(),
	reflect.ValueOf(headerParserMaxForwards).Pointer(),
	reflect.ValueOf(headerParserContentLength).Pointer(),
}

// headerText is fieldValue as the string the parser p of the header
// lowerName is given: a view of the line for the parsers above, a copy for
// every other. The name is looked at first, so the other headers pay a
// switch, not reflect.
func headerText(lowerName []byte, p HeaderParser, fieldValue []byte) string {
	switch string(lowerName) {
	case "cseq", "max-forwards", "content-length", "l":
		if len(fieldValue) > 0 && isNoCopyParser(p) {
			return unsafe.String(unsafe.SliceData(fieldValue), len(fieldValue))
		}
	}
	return string(fieldValue)
}

func isNoCopyParser(p HeaderParser) bool {
	ptr := reflect.ValueOf(p).Pointer()
	for _, np := range noCopyParsers {
		if ptr == np {
			return true
		}
	}
	return false
}

// internMethod is m as one of the method constants when it is one, else
// a copy: a CSeq's method outlives the text it was read from.
func internMethod(m string) RequestMethod {
	for _, k := range [...]RequestMethod{INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY,
		REFER, INFO, MESSAGE, PRACK, UPDATE, PUBLISH} {
		if string(k) == m {
			return k
		}
	}
	return RequestMethod(strings.Clone(m))
}
