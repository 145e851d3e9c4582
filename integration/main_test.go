package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// binaries are the commands under test, built once by TestMain.
var binaries = []string{"sipedge", "confnode", "sipedgectl"}

// built maps a binary name to its path, or to the build error that a test
// needing it reports.
var built = struct {
	path map[string]string
	err  map[string]string
}{path: map[string]string{}, err: map[string]string{}}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sipedge-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if os.Getenv("SIPEDGE_IN_NETNS") == "" { // a namespaced re-run (compose_test.go) runs the image's binaries
		buildBinaries(dir)
	}
	code := m.Run()
	if imageBuild.dir != "" {
		os.RemoveAll(imageBuild.dir)
	}
	return code
}

// buildBinaries runs one `go build` for all commands; when that fails it
// builds them one by one so that a broken command fails only the tests that
// need it, each with the compiler's own message.
func buildBinaries(dir string) {
	gobin := goTool()
	root, err := filepath.Abs("..")
	if err != nil {
		for _, b := range binaries {
			built.err[b] = "module root: " + err.Error()
		}
		return
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, b := range binaries {
		args = append(args, "./cmd/"+b)
	}
	cmd := exec.Command(gobin, args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err == nil {
		for _, b := range binaries {
			built.path[b] = filepath.Join(dir, b)
		}
		return
	} else if len(out) == 0 {
		out = []byte(err.Error())
	}
	for _, b := range binaries {
		cmd := exec.Command(gobin, "build", "-o", filepath.Join(dir, b), "./cmd/"+b)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err[b] = fmt.Sprintf("go build ./cmd/%s: %v\n%s", b, err, strings.TrimSpace(string(out)))
			continue
		}
		built.path[b] = filepath.Join(dir, b)
	}
}

// goTool finds the go command: on PATH, else under $GOROOT.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}

// binary returns the path of a built command or fails the test with the
// build error.
func binary(t testing.TB, name string) string {
	t.Helper()
	if p, ok := built.path[name]; ok {
		return p
	}
	t.Fatalf("binary %s was not built:\n%s", name, built.err[name])
	return ""
}

// requireTool fails (never skips) when an outside program the tests drive
// is missing: a skipped end-to-end test would look like a passing one.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH: the integration tests need it; `make test` installs it "+
			"(Debian packages redis-server and sip-tester)", name)
	}
	return p
}
