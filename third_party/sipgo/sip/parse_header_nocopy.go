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
var noCopyParsers = map[uintptr]bool{
	reflect.ValueOf(headerParserCSeq).Pointer():          true,
	reflect.ValueOf(headerParserMaxForwards).Pointer():   true,
	reflect.ValueOf(headerParserContentLength).Pointer(): true,
}

// headerText is fieldValue as the string the parser p is given: a view of
// the line for the parsers above, a copy for every other.
func headerText(p HeaderParser, fieldValue []byte) string {
	if len(fieldValue) > 0 && noCopyParsers[reflect.ValueOf(p).Pointer()] {
		return unsafe.String(unsafe.SliceData(fieldValue), len(fieldValue))
	}
	return string(fieldValue)
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
