package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// composeFile is the part of docker-compose.yml these tests run; yaml.v3
// resolves the file's anchors and `<<` merge keys as compose does.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       *composeBuild     `yaml:"build"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Restart     string            `yaml:"restart"`
	NetworkMode string            `yaml:"network_mode"`
	Volumes     []string          `yaml:"volumes"`
	Healthcheck *composeHealth    `yaml:"healthcheck"`
	DependsOn   map[string]dep    `yaml:"depends_on"`
	Environment map[string]string `yaml:"environment"`
}

type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

type composeHealth struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

type dep struct {
	Condition string `yaml:"condition"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// startOrder is the services in depends_on order (compose's), ties by name.
func (c composeFile) startOrder(t *testing.T) []string {
	t.Helper()
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string)
	visit = func(s string) {
		switch state[s] {
		case 1:
			t.Fatalf("docker-compose.yml: depends_on cycle through %s", s)
		case 2:
			return
		}
		svc, ok := c.Services[s]
		if !ok {
			t.Fatalf("docker-compose.yml: depends_on names %q, which is no service", s)
		}
		state[s] = 1
		for _, d := range keysOf(svc.DependsOn) {
			visit(d)
		}
		state[s] = 2
		order = append(order, s)
	}
	for _, s := range keysOf(c.Services) {
		visit(s)
	}
	return order
}

// The compose file's promises that do not need anything running: a restart
// policy on every long-running service and none on the one-shot load, a
// health check on Redis and on each sipedge that the others wait for,
// Redis with AOF on a named volume, and config files mounted from the
// repository that exist.
func TestPackaging_ComposeFileShape(t *testing.T) {
	c := loadCompose(t)
	var sipedges, loads []string
	for _, name := range keysOf(c.Services) {
		svc := c.Services[name]
		oneShot := strings.HasPrefix(name, "sipp")
		switch {
		case oneShot && svc.Restart != "no":
			t.Errorf("%s: restart %q, want \"no\" (a finished load run is not restarted)", name, svc.Restart)
		case !oneShot && !slices.Contains([]string{"unless-stopped", "always", "on-failure"}, svc.Restart):
			t.Errorf("%s: restart %q, want unless-stopped, always or on-failure", name, svc.Restart)
		}
		if svc.Image == "sipedge:local" && len(svc.Entrypoint) == 0 {
			sipedges = append(sipedges, name)
			if svc.Healthcheck == nil || !slices.Contains(svc.Healthcheck.Test, "health") {
				t.Errorf("%s: no health check through `sipedgectl health` (/readyz)", name)
			}
		}
		if oneShot {
			loads = append(loads, name)
		}
		for _, v := range svc.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, "./") {
				if _, err := os.Stat(filepath.Join("..", src)); err != nil {
					t.Errorf("%s mounts %s: %v", name, src, err)
				}
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("%s mounts volume %q, which volumes: does not declare", name, src)
			}
		}
		for d, cond := range svc.DependsOn {
			if cond.Condition == "service_healthy" && c.Services[d].Healthcheck == nil {
				t.Errorf("%s waits for %s to be healthy, which has no health check", name, d)
			}
		}
	}
	if len(sipedges) < 2 {
		t.Errorf("sipedge services %v: want two instances of one site", sipedges)
	}
	if len(loads) < 2 {
		t.Errorf("load services %v: want the load spread over both instances", loads)
	}
	redis := c.Services["redis"]
	if !slices.Contains(redis.Command, "--appendonly") || redis.Healthcheck == nil || len(redis.Volumes) == 0 {
		t.Errorf("redis: command %q, health check %v, volumes %q: want AOF on a volume and a health check",
			redis.Command, redis.Healthcheck != nil, redis.Volumes)
	}
}

// The compose file run as written, without a docker engine: each service
// started from its image's binaries (the Dockerfile's own build, as its
// USER), with its entrypoint and command, in depends_on order, each waiting
// for the health checks it depends on, in a loopback-only network namespace
// where the file's fixed host ports are free. The two load services run
// (bounded to a few calls instead of 2000) and every call must pass, each
// instance must have admitted some, and Redis must write its AOF.
// Prometheus and Grafana have no image here: their mounted configs are read
// by TestPackaging_ComposeFileShape and the alert and dashboard tests.
func TestPackaging_ComposeRunsAsWritten(t *testing.T) {
	if os.Getenv("SIPEDGE_IN_NETNS") == "" {
		inNetns(t, buildImage(t, parseDockerfile(t, "../Dockerfile")))
		return
	}
	c := loadCompose(t)
	images := map[string]image{}
	for _, name := range c.startOrder(t) {
		svc := c.Services[name]
		if svc.Build != nil && images[svc.Image].files == nil {
			img := parseDockerfile(t, filepath.Join("..", svc.Build.Context, svc.Build.Dockerfile))
			if svc.Build.Dockerfile == "Dockerfile" {
				img = withBuilt(t, img, buildImage(t, img))
			}
			images[svc.Image] = img
		}
	}
	root, err := os.MkdirTemp("", "sipedge-compose-") // t.TempDir's parent is 0700: the image's user could not enter it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	_ = os.Chmod(root, 0o755)
	cfgDir := filepath.Join(root, "etc")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	procs, healthy := map[string]*proc{}, map[string]bool{}
	var loads []*proc
	for _, name := range c.startOrder(t) {
		svc := c.Services[name]
		for _, d := range keysOf(svc.DependsOn) {
			if svc.DependsOn[d].Condition == "service_healthy" && !healthy[d] {
				waitHealthy(t, d, c.Services[d], images, procs[d])
				healthy[d] = true // compose checks it once; its dependents need not ask again
			}
		}
		argv, uid, ok := serviceArgv(t, name, svc, images, cfgDir)
		if !ok {
			continue
		}
		if strings.HasPrefix(name, "sipp") {
			argv = boundedLoad(argv, 20)
		}
		dir := root
		if name == "redis" { // volume redis-data:/data is its working directory
			dir = filepath.Join(root, "redis-data")
			_ = os.MkdirAll(dir, 0o755)
		}
		p := startAs(t, name, uid, dir, argv)
		procs[name] = p
		if strings.HasPrefix(name, "sipp") {
			loads = append(loads, p)
		}
	}
	if len(loads) < 2 {
		t.Fatalf("%d load services ran, want 2", len(loads))
	}
	for _, p := range loads {
		select {
		case <-p.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s still running after 60 s", p.name)
		}
		if p.waitErr != nil {
			t.Errorf("%s: %v (sipp exits non-zero when a call failed)\n%s", p.name, p.waitErr, tail(p.log(), 15))
		}
	}
	for _, name := range []string{"sipedge-a", "sipedge-b"} {
		admin := flagValue(c.Services[name].Command, "--admin")
		s := &sipedge{admin: admin}
		if n := s.metricOr0(t, "sipedge_admission_placements_total", nil); n < 20 {
			t.Errorf("%s admitted %v new dialogs, want the 20 of its load service", name, n)
		}
	}
	aof, _ := filepath.Glob(filepath.Join(root, "redis-data", "appendonlydir", "*.aof"))
	old, _ := filepath.Glob(filepath.Join(root, "redis-data", "appendonly.aof"))
	if len(aof)+len(old) == 0 {
		t.Errorf("redis wrote no AOF in its volume")
	}
}

// inNetns re-runs this test in a new network namespace (loopback only) and
// fails with its output when it fails there, or did not run.
func inNetns(t *testing.T, imageDir string) {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1) for a loopback-only network namespace")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "sh", "-c",
		`ip link set lo up && exec "$0" -test.run '^TestPackaging_ComposeRunsAsWritten$' -test.count=1 -test.v`, os.Args[0])
	cmd.Env = append(os.Environ(), "SIPEDGE_IN_NETNS=1", "SIPEDGE_IMAGE_DIR="+imageDir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestPackaging_ComposeRunsAsWritten") {
		t.Fatalf("in a loopback-only network namespace: %v\n%s", err, out)
	}
}

// serviceArgv is what the container of svc would exec, mapped to the host,
// and the uid it runs as; ok is false for a service with no image here.
func serviceArgv(t *testing.T, name string, svc composeService, images map[string]image, cfgDir string) ([]string, int, bool) {
	t.Helper()
	img, built := images[svc.Image]
	if !built {
		switch {
		case strings.HasPrefix(svc.Image, "redis:"):
			return hostTool(t, svc.Command), 0, true
		case strings.HasPrefix(svc.Image, "prom/") || strings.HasPrefix(svc.Image, "grafana/"):
			return nil, 0, false
		}
		t.Fatalf("%s: image %q is neither built from this repository nor known to this test", name, svc.Image)
	}
	argv := slices.Clone(img.entrypoint)
	if len(svc.Entrypoint) > 0 {
		argv = slices.Clone(svc.Entrypoint)
	}
	cmd := img.cmd
	if len(svc.Command) > 0 {
		cmd = svc.Command
	}
	argv = append(argv, cmd...)
	for i, a := range argv {
		if h, ok := img.hostPath(a); ok {
			if strings.HasPrefix(a, "/etc/") { // a config: readable by the image's user
				cp := filepath.Join(cfgDir, filepath.Base(a))
				raw, err := os.ReadFile(h)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(cp, raw, 0o644); err != nil {
					t.Fatal(err)
				}
				h = cp
			}
			argv[i] = h
		}
	}
	if !filepath.IsAbs(argv[0]) {
		argv = hostTool(t, argv)
	}
	return argv, img.uid(), true
}

// hostTool resolves argv[0] on PATH: a tool the image installs from
// Debian's packages (sipp, redis-server), which `make deps` installs here.
func hostTool(t *testing.T, argv []string) []string {
	t.Helper()
	p, err := exec.LookPath(argv[0])
	if err != nil {
		t.Fatalf("%s: %v (make deps installs it)", argv[0], err)
	}
	return append([]string{p}, argv[1:]...)
}

// boundedLoad replaces sipp's -m (calls before it exits) with n.
func boundedLoad(argv []string, n int) []string {
	out := slices.Clone(argv)
	for i := range out {
		if out[i] == "-m" && i+1 < len(out) {
			out[i+1] = fmt.Sprint(n)
		}
	}
	return out
}

func flagValue(argv []string, flag string) string {
	for i, a := range argv {
		if a == flag && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return ""
}

// startAs starts argv as uid (0: as the test runs) in dir.
func startAs(t *testing.T, name string, uid int, dir string, argv []string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if uid > 0 {
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s (%q as uid %d): %v", name, argv, uid, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Logf("started %s as uid %d: %s", name, uid, strings.Join(argv, " "))
	t.Cleanup(func() {
		p.stop(3 * time.Second)
		if t.Failed() {
			p.dump(t)
		}
	})
	return p
}

// waitHealthy runs svc's health check as compose does (interval, retries
// after start_period) until it passes; the test fails when it never does.
func waitHealthy(t *testing.T, name string, svc composeService, images map[string]image, p *proc) {
	t.Helper()
	hc := svc.Healthcheck
	if hc == nil || p == nil {
		t.Fatalf("%s: waited for as healthy, but it has no health check or did not start", name)
	}
	every, _ := time.ParseDuration(hc.Interval)
	start, _ := time.ParseDuration(hc.StartPeriod)
	if every <= 0 {
		every = 30 * time.Second
	}
	test := trimCMD(hc.Test)
	if img, ok := images[svc.Image]; ok {
		if h, ok := img.hostPath(test[0]); ok {
			test = append([]string{h}, test[1:]...)
		}
	} else {
		test = hostTool(t, test)
	}
	deadline := time.Now().Add(start + time.Duration(hc.Retries+1)*every)
	var last string
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("%s exited before it was healthy: %v\n%s", name, p.waitErr, tail(p.log(), 20))
		}
		out, err := exec.Command(test[0], test[1:]...).CombinedOutput()
		if err == nil {
			return
		}
		last = fmt.Sprintf("%v: %s", err, out)
		time.Sleep(min(every, 500*time.Millisecond))
	}
	t.Fatalf("%s never healthy (%q): %s\n%s", name, hc.Test, last, tail(p.log(), 20))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
