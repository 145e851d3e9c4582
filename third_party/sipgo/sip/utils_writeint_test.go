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
