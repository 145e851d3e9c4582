package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The shipped unit as systemd reads it: `systemd-analyze verify` (every key
// known, every value parsed, the ExecStart binary present: the one the
// Dockerfile's build makes, put where the unit names it) prints nothing,
// and `systemd-analyze security --offline` rates its sandbox at most 2.0
// ("OK"; 10 is an unconfined service).
func TestPackaging_SystemdUnitVerifiesAndIsHardened(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found (make deps installs Debian's systemd)")
	}
	raw, err := os.ReadFile("../deploy/systemd/sipedge.service")
	if err != nil {
		t.Fatal(err)
	}
	img := parseDockerfile(t, "../Dockerfile")
	img = withBuilt(t, img, buildImage(t, img))
	exec0 := regexp.MustCompile(`(?m)^ExecStart=(\S+)`).FindSubmatch(raw)
	if exec0 == nil {
		t.Fatal("the unit has no ExecStart")
	}
	bin, ok := img.hostPath(string(exec0[1]))
	if !ok {
		t.Fatalf("ExecStart runs %s, which the build does not make", exec0[1])
	}
	unit := filepath.Join(t.TempDir(), "sipedge.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(raw), string(exec0[1]), bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=true", unit).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level > 2.0 {
		t.Errorf("exposure level %.1f, want at most 2.0:\n%s", level, out)
	}
}
