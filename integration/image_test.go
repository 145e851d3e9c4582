package integration

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// This machine (and CI) has a docker client but no engine, and no registry
// to pull golang or distroless from, so the image is never built by docker
// here. What these tests do instead: read the Dockerfile with BuildKit's own
// parser (what `docker build` reads), run its build stage's `go build` on
// the host exactly as written, check that the result is what the run stage
// promises (static binaries, a non-root user, an entrypoint and health check
// that exist), and then run docker-compose.yml's services from those
// binaries, as their image, user, command and health checks say, in a
// loopback-only network namespace where compose's fixed host ports are free.

// image is one Dockerfile's run stage, with its paths mapped to the host.
type image struct {
	base       string            // the run stage's FROM
	stages     int               // how many stages the file has
	user       string            // USER of the run stage ("" root)
	entrypoint []string          // ENTRYPOINT, exec form
	cmd        []string          // CMD, exec form
	health     []string          // HEALTHCHECK test ("CMD", argv...)
	files      map[string]string // image path -> host path, for what the test built or copied
	buildRun   string            // the build stage's RUN that calls go build (shell form)
	runs       []string          // every RUN of the run stage
}

// parseDockerfile reads path with BuildKit's parser and instruction reader.
func parseDockerfile(t *testing.T, path string) image {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s: BuildKit's parser refuses it: %v", path, err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("%s: BuildKit's instruction reader refuses it: %v", path, err)
	}
	if len(stages) == 0 {
		t.Fatalf("%s: no stage", path)
	}
	img := image{stages: len(stages), files: map[string]string{}}
	for _, st := range stages[:len(stages)-1] {
		for _, c := range st.Commands {
			if r, ok := c.(*instructions.RunCommand); ok && strings.Contains(strings.Join(r.CmdLine, " "), "go build") {
				img.buildRun = strings.Join(r.CmdLine, " ")
			}
		}
	}
	last := stages[len(stages)-1]
	img.base = last.BaseName
	for _, c := range last.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			img.user = c.User
		case *instructions.EntrypointCommand:
			img.entrypoint = c.CmdLine
			if c.PrependShell {
				t.Errorf("%s: ENTRYPOINT in shell form (%q): the run stage has no shell", path, c.CmdLine)
			}
		case *instructions.CmdCommand:
			img.cmd = c.CmdLine
		case *instructions.HealthCheckCommand:
			img.health = c.Health.Test
		case *instructions.RunCommand:
			img.runs = append(img.runs, strings.Join(c.CmdLine, " "))
		case *instructions.CopyCommand:
			if c.From == "" { // from the build context: the repository
				for _, src := range c.SourcePaths {
					img.files[c.DestPath] = filepath.Join("..", src)
				}
			}
		}
	}
	return img
}

// uid is the numeric user of a USER value "uid[:gid]"; -1 if not numeric.
func (img image) uid() int {
	u, _, _ := strings.Cut(img.user, ":")
	n, err := strconv.Atoi(u)
	if err != nil {
		return -1
	}
	return n
}

// hostPath maps an image path to the host file the test made for it.
func (img image) hostPath(p string) (string, bool) {
	h, ok := img.files[p]
	return h, ok
}

var imageBuild struct {
	once sync.Once
	dir  string
	out  string
	err  error
}

// buildImage runs the Dockerfile's build command on the host (once per test
// process): its output directory /out/ becomes a directory of the test's.
// SIPEDGE_IMAGE_DIR names one already built (the namespaced child run).
func buildImage(t *testing.T, img image) string {
	t.Helper()
	if d := os.Getenv("SIPEDGE_IMAGE_DIR"); d != "" {
		return d
	}
	imageBuild.once.Do(func() {
		if img.buildRun == "" {
			imageBuild.err = fmt.Errorf("no RUN of the build stages calls go build")
			return
		}
		dir, err := os.MkdirTemp("", "sipedge-image-")
		if err != nil {
			imageBuild.err = err
			return
		}
		imageBuild.dir = dir
		if !strings.Contains(img.buildRun, " -o /out/ ") {
			imageBuild.err = fmt.Errorf("the build RUN no longer writes to /out/, which the run stage copies: %s", img.buildRun)
			return
		}
		script := strings.Replace(img.buildRun, " -o /out/ ", " -o "+dir+"/out/ ", 1)
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir = ".." // WORKDIR /src holds `COPY . .`: the repository
		cmd.Env = append(os.Environ(), "VERSION=image-test")
		out, err := cmd.CombinedOutput()
		imageBuild.out = string(out)
		if err != nil {
			imageBuild.err = fmt.Errorf("build RUN %q: %v\n%s", script, err, out)
		}
		_ = os.Chmod(dir, 0o755) // the image's non-root user runs from here
	})
	if imageBuild.err != nil {
		t.Fatal(imageBuild.err)
	}
	return imageBuild.dir
}

// withBuilt maps the run stage's COPY --from=build /out/ to the built files.
func withBuilt(t *testing.T, img image, dir string) image {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "out"))
	if err != nil || len(ents) == 0 {
		t.Fatalf("the build wrote nothing to /out/: %v", err)
	}
	for _, e := range ents {
		img.files["/usr/local/bin/"+e.Name()] = filepath.Join(dir, "out", e.Name())
	}
	return img
}

// The Dockerfile as docker would read it: two stages, a static non-root run
// stage without a shell, whose binaries the build stage makes static and
// whose entrypoint, command and health check name files the image has.
func TestPackaging_DockerfileBuildsStaticNonRootImage(t *testing.T) {
	img := parseDockerfile(t, "../Dockerfile")
	if img.stages < 2 {
		t.Errorf("Dockerfile has %d stage(s), want a build stage and a run stage", img.stages)
	}
	if !strings.HasPrefix(img.base, "gcr.io/distroless/static") && img.base != "scratch" {
		t.Errorf("run stage FROM %q: want distroless static or scratch (no libc, no shell)", img.base)
	}
	if img.uid() <= 0 {
		t.Errorf("run stage USER %q: want a numeric non-root uid (Kubernetes runAsNonRoot checks the number)", img.user)
	}
	if len(img.runs) > 0 {
		t.Errorf("run stage has RUN %q: it has no shell", img.runs)
	}
	if !strings.Contains(img.buildRun, "CGO_ENABLED=0") {
		t.Errorf("build RUN %q does not set CGO_ENABLED=0: the binaries would need libc", img.buildRun)
	}
	img = withBuilt(t, img, buildImage(t, img))
	for _, name := range []string{"sipedge", "sipedgectl", "confnode"} {
		p, ok := img.hostPath("/usr/local/bin/" + name)
		if !ok {
			t.Errorf("the image has no /usr/local/bin/%s", name)
			continue
		}
		if why := notStatic(p); why != "" {
			t.Errorf("%s: %s", name, why)
		}
		out, err := exec.Command(p, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "image-test") {
			t.Errorf("%s --version = %q, %v: want the VERSION build argument (image-test)", name, out, err)
		}
	}
	for what, argv := range map[string][]string{"ENTRYPOINT": img.entrypoint, "HEALTHCHECK": trimCMD(img.health)} {
		if len(argv) == 0 {
			t.Errorf("run stage has no %s", what)
			continue
		}
		if _, ok := img.hostPath(argv[0]); !ok {
			t.Errorf("%s runs %q, which the image does not have", what, argv[0])
		}
	}
	for i, a := range img.cmd {
		if a == "--config" && i+1 < len(img.cmd) {
			if p, ok := img.hostPath(img.cmd[i+1]); !ok {
				t.Errorf("CMD names config %q, which the image does not have", img.cmd[i+1])
			} else if _, err := os.Stat(p); err != nil {
				t.Errorf("CMD's config %q comes from %s: %v", img.cmd[i+1], p, err)
			}
		}
	}
}

// trimCMD drops the "CMD" / "CMD-SHELL" marker of a health check test.
func trimCMD(test []string) []string {
	if len(test) > 0 && (test[0] == "CMD" || test[0] == "CMD-SHELL") {
		return test[1:]
	}
	return test
}

// notStatic says why an ELF file would not run in a distroless static
// image: an interpreter (the dynamic loader) or a needed shared library.
func notStatic(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "dynamically linked (has an ELF interpreter)"
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Sprintf("needs shared libraries %v", libs)
	}
	return ""
}
