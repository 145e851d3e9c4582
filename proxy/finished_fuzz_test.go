package proxy

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// FuzzScanServerKey: the finished table's key scan runs on every UDP
// datagram before sipgo parses it, and a key it finds absorbs the datagram
// as a retransmission (answered from the stored response, or dropped). It
// never panics, and whatever it reads a key from that sipgo also parses,
// sipgo gives the same method and the same server transaction key: a
// different key would absorb a new request as another's retransmission.
// (A datagram sipgo refuses is dropped either way; one with two CSeq
// headers gets its transaction's answer instead of the sanity check's 400.)
func FuzzScanServerKey(f *testing.F) {
	for _, tc := range rawCases {
		f.Add(crlfd(tc.msg), false)
	}
	for _, dir := range []string{"testdata/rfc4475", "testdata/rfc5118"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b, false)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, asInvite bool) {
		as := ""
		if asInvite {
			as = "INVITE"
		}
		got, ok := scanServerKey(data, nil, as)
		if !ok {
			return
		}
		msg, err := newParser().ParseSIP(bytes.Clone(data))
		if err != nil {
			return
		}
		req, isReq := msg.(*sip.Request)
		if !isReq {
			t.Fatalf("key %q read from a response:\n%q", got.key, data)
		}
		if req.CSeq() == nil || req.Via() == nil {
			t.Fatalf("key %q read from a request sipgo finds no CSeq or Via in:\n%q", got.key, data)
		}
		if len(req.GetHeaders("CSeq")) > 1 {
			// The scan takes the first CSeq, sipgo the last; the sanity
			// check answers 400 to a parsed one. Absorbed, a retransmission
			// with two gets its transaction's stored answer instead: either
			// is a fair answer to a malformed copy, and nothing new passes.
			return
		}
		if as != "" {
			req.CSeq().MethodName = sip.RequestMethod(as)
		}
		want, err := sip.ServerTxKeyMake(req)
		if err != nil {
			t.Fatalf("key %q read where sipgo makes none (%v):\n%q", got.key, err, data)
		}
		if string(got.key) != want {
			t.Fatalf("key %q, sipgo's %q:\n%q", got.key, want, data)
		}
		if string(got.method) != string(req.Method) {
			t.Fatalf("method %q, sipgo's %q:\n%q", got.method, req.Method, data)
		}
	})
}
