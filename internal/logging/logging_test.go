package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Issue 10 item 7: a console log written to a file or pipe has no ANSI
// colours, and JSON and console lines carry the same RFC 3339 UTC
// timestamp.
func TestNew_ConsoleWithoutTerminalHasNoColourAndOneTimeFormat(t *testing.T) {
	var console, js bytes.Buffer
	c, err := New(&console, "console", "info")
	if err != nil {
		t.Fatal(err)
	}
	c.Info().Dur("wait", 1500*time.Millisecond).Msg("hello")
	if strings.Contains(console.String(), "\x1b[") {
		t.Errorf("console line to a buffer has ANSI escapes: %q", console.String())
	}
	j, err := New(&js, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	j.Info().Msg("hello")
	var line struct{ Time string }
	if err := json.Unmarshal(js.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	ts, err := time.Parse(TimeFormat, line.Time)
	if err != nil || !strings.HasSuffix(line.Time, "Z") {
		t.Fatalf("JSON time %q: not RFC 3339 UTC: %v", line.Time, err)
	}
	if first := strings.Fields(console.String())[0]; len(first) < len("2006-01-02T15:04:05Z") {
		t.Errorf("console time %q is not the RFC 3339 format", first)
	} else if _, err := time.Parse(TimeFormat, first); err != nil {
		t.Errorf("console time %q: %v", first, err)
	}
	if time.Since(ts) > time.Minute {
		t.Errorf("JSON time %v is not now", ts)
	}
}
