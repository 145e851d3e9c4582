package logging

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestOutage_OneLineEachWay(t *testing.T) {
	var buf bytes.Buffer
	o := NewOutage(zerolog.New(&buf), "beat failing", "beat restored")
	boom := errors.New("boom")
	for i, err := range []error{nil, boom, boom, boom, nil, nil, boom} {
		if got := o.Note(err); got != (err != nil) {
			t.Fatalf("attempt %d: Note = %v", i, got)
		}
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{`"level":"warn","error":"boom","message":"beat failing"`, `"level":"info","message":"beat restored"`,
		`"level":"warn","error":"boom","message":"beat failing"`}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d = %s, want %s", i, lines[i], w)
		}
	}
}
