package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestString_NamesVersionAndToolchain(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "v9.9.9"
	if got := String(); !strings.HasPrefix(got, "v9.9.9") || !strings.HasSuffix(got, runtime.Version()) {
		t.Fatalf("String() = %q", got)
	}
	Version = ""
	if got := Short(); got == "" {
		t.Fatal("Short() empty without a link-time version")
	}
}
