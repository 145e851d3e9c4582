package proxy

import (
	"bytes"
	"testing"
)

// BenchmarkCallRejectStateful is BenchmarkCallReject through the stateful
// path (the admitter never answers Rejecting): sipgo's transaction, 100
// Trying, the 503 kept for its ACK. Run the two in one sitting to compare:
//
//	go test -run '^$' -bench 'CallReject' -benchmem -benchtime 3000x -count 5 ./proxy/
func BenchmarkCallRejectStateful(b *testing.B) {
	runRejects(b, newCallRigWith(b, true, &benchAdmitter{stateful: true}))
}

// runRejects sends b.N INVITEs, each answered 503, and the ACK of each
// with the 503's To tag.
func runRejects(b *testing.B, r *callRig) {
	c := r.caller
	var tag []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.out = appendRequest(c.out[:0], "INVITE", r.ruri, c.addr(), i, 1, nil)
		c.send(r.pxAddr, c.out)
		res := c.recv("SIP/2.0 503")
		tag = append(tag[:0], rawToTag(res)...)
		c.out = appendRequest(c.out[:0], "ACK", r.ruri, c.addr(), i, 1, nil)
		c.out = withToTag(c.out, tag)
		c.send(r.pxAddr, c.out)
	}
}

// withToTag inserts ";tag=" tag at the end of msg's To header line, in
// place (msg's capacity permitting).
func withToTag(msg, tag []byte) []byte {
	i := bytes.Index(msg, []byte("\r\nTo: "))
	if i < 0 || len(tag) == 0 {
		return msg
	}
	end := i + 2 + bytes.Index(msg[i+2:], []byte("\r\n"))
	ins := len(";tag=") + len(tag)
	msg = append(append(msg, ";tag="...), tag...) // grown by ins bytes
	copy(msg[end+ins:], msg[end:len(msg)-ins])
	copy(msg[end:], ";tag=")
	copy(msg[end+len(";tag="):], tag)
	return msg
}
