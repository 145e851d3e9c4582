package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// promtool runs Prometheus's promtool (Debian package prometheus; `make
// deps` installs it) and returns its output and whether it exited 0.
func promtool(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	bin := requireTool(t, "promtool")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("promtool %v: %v", args, err)
		}
	}
	return string(out), err == nil
}

// Issue 10 item 4, with a real Prometheus's tool: the shipped rule file
// passes `promtool check rules`, and `promtool test rules` runs its unit
// tests (deploy/prometheus/alerts_test.yml): each alert fires on its
// series once its `for:` has passed and stays silent on healthy series.
func TestPrometheus_PromtoolChecksAndTestsRules(t *testing.T) {
	if out, ok := promtool(t, "check", "rules", "../deploy/prometheus/alerts.yml"); !ok {
		t.Fatalf("promtool check rules:\n%s", out)
	}
	if out, ok := promtool(t, "test", "rules", "../deploy/prometheus/alerts_test.yml"); !ok {
		t.Fatalf("promtool test rules:\n%s", out)
	}
}

// The unit tests can fail: an alert whose expression always fires, or
// never fires, makes `promtool test rules` fail, for every alert of the
// file (so each one has a firing and a silent case).
func TestPrometheus_RuleTestsCatchABrokenAlert(t *testing.T) {
	raw, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("../deploy/prometheus/alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range doc["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			names = append(names, r.(map[string]any)["alert"].(string))
		}
	}
	if len(names) < 4 {
		t.Fatalf("only %d alerts in alerts.yml", len(names))
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		for _, broken := range []struct{ how, expr string }{
			{"always fires", `vector(1)`},
			{"never fires", `vector(1) > 2`},
		} {
			t.Run(name+"/"+broken.how, func(t *testing.T) {
				var d map[string]any
				if err := yaml.Unmarshal(raw, &d); err != nil {
					t.Fatal(err)
				}
				for _, g := range d["groups"].([]any) {
					for _, r := range g.(map[string]any)["rules"].([]any) {
						if rm := r.(map[string]any); rm["alert"] == name {
							rm["expr"] = broken.expr
						}
					}
				}
				var buf bytes.Buffer
				enc := yaml.NewEncoder(&buf)
				if err := enc.Encode(d); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				out, ok := promtool(t, "test", "rules", filepath.Join(dir, "alerts_test.yml"))
				if ok {
					t.Fatalf("promtool test rules passed with %s's expression replaced by %s: its unit test does not check that case\n%s", name, broken.expr, out)
				}
				if !strings.Contains(out, name) {
					t.Errorf("promtool's failure does not name %s:\n%s", name, out)
				}
			})
		}
	}
}
