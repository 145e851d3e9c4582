package sip

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// sipedge patch: writeInt writes what strconv.Itoa returns, through every
// kind of writer, and allocates nothing for the two the stack writes with.
func TestWriteInt_AsItoa(t *testing.T) {
	values := []int{0, 7, 99, 100, 180, 5060, 65535, 1 << 31, -1, -5060}
	for _, v := range values {
		want := strconv.Itoa(v)
		var sb strings.Builder
		writeInt(&sb, v)
		var bb bytes.Buffer
		writeInt(&bb, v)
		var other stringWriterOnly
		writeInt(&other, v)
		for name, got := range map[string]string{"strings.Builder": sb.String(), "bytes.Buffer": bb.String(), "other": other.s} {
			if got != want {
				t.Errorf("%s: writeInt(%d) wrote %q, want %q", name, v, got, want)
			}
		}
	}
	var bb bytes.Buffer
	bb.Grow(64)
	if n := testing.AllocsPerRun(100, func() { bb.Reset(); writeInt(&bb, 5060) }); n != 0 {
		t.Errorf("writeInt into a bytes.Buffer: %v allocs, want 0", n)
	}
}

type stringWriterOnly struct{ s string }

func (w *stringWriterOnly) WriteString(s string) (int, error) { w.s += s; return len(s), nil }

// The headers that write numbers do it through writeInt: their values as
// before, and no allocation into the message's buffer (Expires 3600 on a
// REGISTER, a Content-Length, a Via's port).
func TestHeaders_WriteNumbersWithoutAllocating(t *testing.T) {
	expires, maxFwd, length := ExpiresHeader(3600), MaxForwardsHeader(70), ContentLengthHeader(1432)
	via := &ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: 5060}
	for _, tc := range []struct {
		write func(*bytes.Buffer)
		want  string
	}{
		{func(b *bytes.Buffer) { expires.valueStringWrite(b) }, "3600"},
		{func(b *bytes.Buffer) { maxFwd.valueStringWrite(b) }, "70"},
		{func(b *bytes.Buffer) { length.valueStringWrite(b) }, "1432"},
		{func(b *bytes.Buffer) { via.valueStringWrite(b) }, "SIP/2.0/UDP 127.0.0.1:5060"},
	} {
		var bb bytes.Buffer
		bb.Grow(128)
		tc.write(&bb)
		if bb.String() != tc.want {
			t.Errorf("wrote %q, want %q", bb.String(), tc.want)
		}
		if n := testing.AllocsPerRun(100, func() { bb.Reset(); tc.write(&bb) }); n != 0 {
			t.Errorf("%s: %v allocs, want 0", tc.want, n)
		}
	}
}
