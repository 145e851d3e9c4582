package proxy

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// fuzzSeeds adds every torture message as a seed.
func fuzzSeeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/rfc*/*.dat")
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(wireBenchInvite))
}

// FuzzRawChecks: the byte-level code that runs on every message from the
// network never panics, never grows a message, and keeps its body.
func FuzzRawChecks(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		in := append([]byte(nil), data...)
		n, _ := rawSanity(in)
		if n > len(data) || n < 0 {
			t.Fatalf("rawSanity length %d of %d", n, len(data))
		}
		if i := bytes.Index(data, crlfcrlf); i >= 0 && !bytes.HasSuffix(in[:n], data[i:]) {
			t.Fatal("rawSanity changed the body")
		}
		if k, st, _ := frame(data, 4096); k > len(data) || (st == frameOK && k == 0) {
			t.Fatalf("frame %d, %d of %d bytes", k, st, len(data))
		}
		code, reason := rawVerdict(data, "e")
		if out := rawResponse(data, code, reason, "s"); out != nil && !bytes.HasPrefix(out, []byte("SIP/2.0 ")) {
			t.Fatalf("answer %q", out)
		}
		_ = rawCallID(data)
		_ = topViaPort(data)
	})
}
