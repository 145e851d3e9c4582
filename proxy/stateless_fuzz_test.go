package proxy

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// FuzzScanRaw: the stateless path's bytes-only reading runs on every
// datagram a rejecting instance receives. It never panics, and whatever it
// accepts, sipgo parses as a request that says the same: method,
// Request-URI user and host, Call-ID, From tag, top Via branch, CSeq
// number, To user and host, number of Vias, no To tag. A request the two
// readings disagree on would get an answer built from something sipgo
// would not have read.
func FuzzScanRaw(f *testing.F) {
	for _, tc := range rawCases {
		f.Add(crlfd(tc.msg))
	}
	for _, dir := range []string{"testdata/rfc4475", "testdata/rfc5118"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r rawRequest
		if !scanRaw(data, &r) {
			return
		}
		msg, err := newParser().ParseSIP(bytes.Clone(data))
		if err != nil {
			t.Fatalf("scanRaw read a request sipgo cannot parse (%v):\n%q", err, data)
		}
		req, ok := msg.(*sip.Request)
		if !ok {
			t.Fatalf("scanRaw read a response as a request:\n%q", data)
		}
		differ := func(what string, raw []byte, parsed string) {
			if string(raw) != parsed {
				t.Errorf("%s: bytes reading %q, sipgo %q\n%q", what, raw, parsed, data)
			}
		}
		if r.method != req.Method {
			t.Errorf("method: bytes reading %q, sipgo %q", r.method, req.Method)
		}
		differ("Request-URI user", r.ruriUser, req.Recipient.User)
		differ("Request-URI host", r.ruriHost, req.Recipient.Host)
		if req.CallID() == nil || req.From() == nil || req.To() == nil || req.CSeq() == nil || req.Via() == nil {
			t.Fatalf("sipgo lacks a header the bytes reading found:\n%q", data)
		}
		differ("Call-ID", r.callID, req.CallID().Value())
		tag, _ := req.From().Params.Get("tag")
		differ("From tag", r.fromTag, tag)
		branch, _ := req.Via().Params.Get("branch")
		differ("top Via branch", r.branch, branch)
		differ("CSeq number", r.cseq, uitoa(req.CSeq().SeqNo))
		differ("To user", r.toUser, req.To().Address.User)
		differ("To host", r.toHost, req.To().Address.Host)
		if _, ok := req.To().Params.Get("tag"); ok {
			t.Errorf("bytes reading accepted a To tag:\n%q", data)
		}
		if n := len(req.GetHeaders("Via")); n != r.nvias {
			t.Errorf("Vias: bytes reading %d, sipgo %d\n%q", r.nvias, n, data)
		}
	})
}

func uitoa(n uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
