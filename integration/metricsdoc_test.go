package integration

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	// metricDecl is how every sipedge metric is declared (prometheus.*Opts).
	metricDecl = regexp.MustCompile(`Name:\s*"(sipedge_[a-z0-9_]+)"`)
	// metricRow is one row of the README's metric table.
	metricRow = regexp.MustCompile("^\\| `(sipedge_[a-z0-9_]+)`")
)

// declaredMetrics are the sipedge metrics the code registers, read from
// the source (vectors without a series yet do not show in /metrics).
func declaredMetrics(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "integration" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") ||
			strings.Contains(path, "/cmd/") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricDecl.FindAllStringSubmatch(string(b), -1) {
			seen[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(func(yield func(string) bool) {
		for k := range seen {
			if !yield(k) {
				return
			}
		}
	})
}

// documentedMetrics are the rows of the README's metric table.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if m := metricRow.FindStringSubmatch(l); m != nil {
			out = append(out, m[1])
		}
	}
	slices.Sort(out)
	return out
}

// Issue 10 item 3: the README's metric list is exactly what sipedge
// registers, and a running instance exports nothing the list lacks.
func TestMetricsDoc_READMEListsExactlyTheRegisteredMetrics(t *testing.T) {
	declared, documented := declaredMetrics(t), documentedMetrics(t)
	if len(declared) < 40 {
		t.Fatalf("only %d metric declarations found: the scan is broken", len(declared))
	}
	for _, n := range declared {
		if !slices.Contains(documented, n) {
			t.Errorf("registered but not in the README: %s", n)
		}
	}
	for _, n := range documented {
		if !slices.Contains(declared, n) {
			t.Errorf("in the README but not registered: %s", n)
		}
	}
	e := newEnv(t)
	node := e.startNode("n1")
	e.registerNode("n1", node.addr())
	s := e.startSipedge("A", "--media-ports", mediaPorts(t))
	s.waitRing(t, 5*time.Second, "n1")
	_, text, err := s.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for name := range exported(text) {
		if !strings.HasPrefix(name, "sipedge_") {
			continue
		}
		base := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suf); ok && slices.Contains(documented, b) {
				base = b
			}
		}
		if !slices.Contains(documented, base) {
			t.Errorf("exported by a running sipedge but not in the README: %s", name)
		}
	}
}
