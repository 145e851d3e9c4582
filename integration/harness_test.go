package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Timing of the sipedge instances under test. Probing is fast so that a
// dead node leaves the ring within about a second.
const (
	probeInterval = 300 * time.Millisecond
	probeDown     = 2
	probeUp       = 1
	// probeTimeout: a probe to a dead UDP node takes this long to fail.
	// Generous, so a node slowed down by a loaded test machine is not
	// taken for dead.
	probeTimeout = time.Second
)

// ---------------------------------------------------------------------------
// processes

// proc is one child process. Its stdout and stderr go to a file in the
// test's temp dir; it is stopped when the test ends and its log is printed
// if the test failed.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	// extra is printed after the log on failure (e.g. a trace summary).
	extra func() string
	// files are kept with the log (see keepEnv), e.g. sipp traces.
	files []string
}

// keepEnv names an environment variable: when it holds a directory, every
// test's process logs and sipp traces are copied there, to read after the
// run (t.TempDir is removed).
const keepEnv = "SIPEDGE_INTEGRATION_KEEP"

// startProc starts bin with args and registers its cleanup.
func startProc(t testing.TB, name, bin string, args ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s (%s %s): %v", name, bin, strings.Join(args, " "), err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Logf("started %s (pid %d): %s %s", name, cmd.Process.Pid, filepath.Base(bin), strings.Join(args, " "))
	t.Cleanup(func() {
		p.stop(3 * time.Second)
		if t.Failed() {
			p.dump(t)
		}
		p.keep(t)
	})
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the process at once (SIGKILL) and waits for it.
func (p *proc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// stop asks the process to end (SIGTERM) and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// log returns everything the process wrote so far.
func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// dump prints the process log: whole when small, otherwise its warnings
// and errors plus its tail.
func (p *proc) dump(t testing.TB) {
	t.Helper()
	const whole = 24 << 10
	body := p.log()
	status := "running"
	if p.exited() {
		status = fmt.Sprintf("exited: %v", p.waitErr)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "==== %s (%s), %d bytes of log ====\n", p.name, status, len(body))
	if len(body) <= whole {
		b.WriteString(body)
	} else {
		lines := strings.Split(strings.TrimRight(body, "\n"), "\n")
		var bad []string
		for _, l := range lines {
			if strings.Contains(l, `"level":"error"`) || strings.Contains(l, `"level":"warn"`) ||
				strings.Contains(l, `"level":"fatal"`) || strings.Contains(l, "panic") {
				bad = append(bad, l)
			}
		}
		if len(bad) > 40 {
			bad = append(bad[:40], fmt.Sprintf("... %d more warning/error lines", len(bad)-40))
		}
		if len(bad) > 0 {
			b.WriteString("-- warnings and errors --\n" + strings.Join(bad, "\n") + "\n")
		}
		tail := lines
		if len(tail) > 80 {
			tail = tail[len(tail)-80:]
		}
		b.WriteString("-- last lines --\n" + strings.Join(tail, "\n") + "\n")
	}
	if p.extra != nil {
		b.WriteString(p.extra())
	}
	t.Log(b.String())
}

// keep copies the log and files to $SIPEDGE_INTEGRATION_KEEP/<test>/.
func (p *proc) keep(t testing.TB) {
	t.Helper()
	root := os.Getenv(keepEnv)
	if root == "" {
		return
	}
	dir := filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("keep logs: %v", err)
		return
	}
	for _, f := range append([]string{p.logPath}, p.files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		dst := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Logf("keep logs: %v", err)
		}
	}
	t.Logf("kept %s's log in %s", p.name, dir)
}

// ---------------------------------------------------------------------------
// ports

// usedPorts keeps the ports handed out in this test binary so that two
// helpers never get the same one between probe and bind.
var usedPorts = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// Ports handed to child processes come from above the kernel's ephemeral
// range (net.ipv4.ip_local_port_range, 32768-60999 by default). A port the
// kernel handed out for a moment (Listen on :0) is free when probed, but
// any connect() may take it again before the child binds it: baresip and
// sipp failed to start with EADDRINUSE that way. Below the ephemeral range
// sit sipp's own media defaults (6000, rtp_stream from 8000), baresip's
// RTP (10000-20000) and the tests' relay ranges (relayRange).
const (
	childPortLo = 61000
	childPortHi = 65535
)

// Relay ranges (--media-ports) come from below the ephemeral range and
// above baresip's RTP, claimed like child ports so that no two ranges
// handed out overlap: two instances of one test (presence's A and B) drawn
// at random could share ports, and the upper part of the old 20000-39999
// lay in the ephemeral range, where any connect() may take a relay port.
const (
	relayPortLo = 20000
	relayPortHi = 32767
)

// relayRange returns the first port of n (even, so RTP/RTCP pairs align)
// that no other helper holds; they are released when t ends. They are not
// probed: a thousand binds per range, and sipedge skips a port it cannot
// bind.
func relayRange(t testing.TB, n int) int {
	t.Helper()
	base := drawPorts(t, relayPortLo, relayPortHi, n, 2, false)
	t.Cleanup(func() {
		usedPorts.Lock()
		defer usedPorts.Unlock()
		for p := base; p < base+n; p++ {
			delete(usedPorts.m, p)
		}
	})
	return base
}

// freePort returns a loopback port that is free for both UDP and TCP and
// that no other helper of this test binary was given.
func freePort(t testing.TB) int {
	t.Helper()
	return freePortRun(t, 1)
}

// freePortRun returns the first of n consecutive loopback ports that are
// all free for UDP and TCP (the demo's confnodes listen on NODE_PORT and
// the two ports above it). Only the first used to be checked: a confnode
// whose port another process held failed to start, and the live page test
// with it.
func freePortRun(t testing.TB, n int) int {
	t.Helper()
	return drawPorts(t, childPortLo, childPortHi, n, 1, true)
}

// drawPorts claims n consecutive ports in [lo, hi] starting at lo plus a
// random multiple of step.
func drawPorts(t testing.TB, lo, hi, n, step int, probe bool) int {
	t.Helper()
	for range 500 {
		base := lo + step*rand.IntN((hi+2-n-lo)/step)
		if claimPorts(base, n, probe) {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports in %d-%d", n, lo, hi)
	return 0
}

// claimPorts marks the n ports from base as handed out, all or none, if
// no helper has any of them and (with probe) each is free for TCP and UDP
// now.
func claimPorts(base, n int, probe bool) bool {
	usedPorts.Lock()
	defer usedPorts.Unlock()
	for p := base; p < base+n; p++ {
		if usedPorts.m[p] || (probe && !portFree(p)) {
			return false
		}
	}
	for p := base; p < base+n; p++ {
		usedPorts.m[p] = true
	}
	return true
}

// portFree says whether port binds on 127.0.0.1 for both TCP and UDP.
func portFree(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// ---------------------------------------------------------------------------
// waiting

// eventually polls cond every 50 ms until it returns "" or timeout passes,
// then fails with cond's last explanation.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: %s", what, timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// redis

// env is one test's world: a private redis-server and the client the test
// uses to play operator.
type env struct {
	t         *testing.T
	redisAddr string
	rdb       *redis.Client
}

// newEnv checks the outside tools and starts a redis-server on a free
// loopback port with persistence off. Each test gets its own server, so
// no state leaks between tests.
func newEnv(t *testing.T) *env {
	t.Helper()
	server := requireTool(t, "redis-server")
	requireTool(t, "sipp")
	port := freePort(t)
	startProc(t, "redis", server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "yes")
	addr := loopback(port)
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	eventually(t, 5*time.Second, "redis-server answers PING", func() string {
		if err := rdb.Ping(context.Background()).Err(); err != nil {
			return err.Error()
		}
		return ""
	})
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatalf("flush redis: %v", err)
	}
	return &env{t: t, redisAddr: addr, rdb: rdb}
}

// registerNode puts a media node in Redis the way an operator would with
// redis-cli (SPEC §2): SADD to the set and HSET of its hash. No heartbeat
// field, so sipedge judges the node by OPTIONS probes alone. Nothing is
// published: plain writes must apply within 1 s.
func (e *env) registerNode(name, addr string) {
	e.t.Helper()
	ctx := context.Background()
	if err := e.rdb.SAdd(ctx, "sipedge:nodes", name).Err(); err != nil {
		e.t.Fatalf("SADD sipedge:nodes %s: %v", name, err)
	}
	if err := e.rdb.HSet(ctx, "sipedge:node:"+name,
		"addr", addr, "transport", "udp", "weight", "100", "site", "default").Err(); err != nil {
		e.t.Fatalf("HSET sipedge:node:%s: %v", name, err)
	}
}

// publish announces a change on the events channel (what sipedgectl does).
func (e *env) publish() {
	e.t.Helper()
	if err := e.rdb.Publish(context.Background(), "sipedge:events", "test").Err(); err != nil {
		e.t.Fatalf("PUBLISH sipedge:events: %v", err)
	}
}

// confKeys lists the active conference hashes.
func (e *env) confKeys() []string {
	e.t.Helper()
	keys, err := e.rdb.Keys(context.Background(), "sipedge:conf:*").Result()
	if err != nil {
		e.t.Fatalf("KEYS sipedge:conf:*: %v", err)
	}
	return keys
}

// confNode is the node field of sipedge:conf:<id> ("" when absent).
func (e *env) confNode(id string) string {
	v, err := e.rdb.HGet(context.Background(), "sipedge:conf:"+id, "node").Result()
	if err != nil {
		return ""
	}
	return v
}

// waitNoConferences waits until every sipedge:conf:* hash is gone: each
// conference's last dialog has ended.
func (e *env) waitNoConferences(timeout time.Duration) {
	e.t.Helper()
	eventually(e.t, timeout, "conference hashes deleted after the last BYE", func() string {
		if k := e.confKeys(); len(k) > 0 {
			if len(k) > 5 {
				return fmt.Sprintf("%d left, e.g. %v", len(k), k[:5])
			}
			return fmt.Sprintf("%d left: %v", len(k), k)
		}
		return ""
	})
}

// ---------------------------------------------------------------------------
// sipedge

// sipedge is one running sipedge instance.
type sipedge struct {
	name  string
	port  int // SIP, UDP and TCP
	admin string
	proc  *proc
}

func (s *sipedge) sipAddr() string { return loopback(s.port) }

// startSipedge runs an instance against the env's Redis and waits for its
// /healthz.
func (e *env) startSipedge(name string, extra ...string) *sipedge {
	e.t.Helper()
	bin := binary(e.t, "sipedge")
	port, admin := freePort(e.t), loopback(freePort(e.t))
	args := []string{
		"--name", name, "--site", "default", "--server", "srv" + name,
		"--listen", loopback(port), "--advertise", loopback(port),
		"--redis", e.redisAddr, "--admin", admin,
		"--log-format", "json", "--log-level", "debug",
		"--probe-interval", probeInterval.String(), "--probe-timeout", probeTimeout.String(),
		"--probe-down", strconv.Itoa(probeDown), "--probe-up", strconv.Itoa(probeUp),
		"--heartbeat-timeout", "3s", "--resync-interval", "500ms",
	}
	args = append(args, extra...)
	s := &sipedge{name: name, port: port, admin: admin}
	s.proc = startProc(e.t, "sipedge-"+name, bin, args...)
	eventually(e.t, 15*time.Second, "sipedge "+name+" /healthz", func() string {
		if s.proc.exited() {
			e.t.Fatalf("sipedge %s exited during start-up: %v\n%s", name, s.proc.waitErr, s.proc.log())
		}
		code, body, err := s.get("/healthz")
		if err != nil {
			return err.Error()
		}
		if code != http.StatusOK {
			return fmt.Sprintf("HTTP %d: %s", code, body)
		}
		return ""
	})
	return s
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// get fetches an admin path.
func (s *sipedge) get(path string) (int, string, error) {
	res, err := httpClient.Get("http://" + s.admin + path)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// nodeStatus is the part of /api/status the tests read: a node is in the
// ring when it is eligible (healthy and in normal service).
type nodeStatus struct {
	Name     string `json:"name"`
	Healthy  *bool  `json:"healthy"`
	Eligible *bool  `json:"eligible"`
	Reason   string `json:"reason"`
}

type statusDoc struct {
	Nodes []nodeStatus `json:"nodes"`
}

// status reads /api/status.
func (s *sipedge) status() (statusDoc, string, error) {
	code, body, err := s.get("/api/status")
	if err != nil {
		return statusDoc{}, "", err
	}
	if code != http.StatusOK {
		return statusDoc{}, body, fmt.Errorf("GET /api/status: HTTP %d", code)
	}
	var d statusDoc
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		return statusDoc{}, body, fmt.Errorf("GET /api/status: %w", err)
	}
	return d, body, nil
}

// ringMembers returns the names of eligible nodes per /api/status.
func (s *sipedge) ringMembers() (map[string]bool, string, error) {
	d, body, err := s.status()
	if err != nil {
		return nil, body, err
	}
	in := map[string]bool{}
	for _, n := range d.Nodes {
		if n.Eligible == nil {
			return nil, body, errors.New(`/api/status: node without an "eligible" field`)
		}
		if *n.Eligible {
			in[n.Name] = true
		}
	}
	return in, body, nil
}

// waitRing waits until the instance's ring holds exactly want.
func (s *sipedge) waitRing(t testing.TB, timeout time.Duration, want ...string) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("sipedge %s ring = %v", s.name, want), func() string {
		in, body, err := s.ringMembers()
		if err != nil {
			return err.Error() + "\n" + body
		}
		if len(in) != len(want) {
			return fmt.Sprintf("eligible %v\n%s", keysOf(in), body)
		}
		for _, w := range want {
			if !in[w] {
				return fmt.Sprintf("eligible %v\n%s", keysOf(in), body)
			}
		}
		return ""
	})
}

// metric sums the samples of a Prometheus counter or gauge whose labels
// include every label in match (name{k="v",...} value lines).
func (s *sipedge) metric(t testing.TB, name string, match map[string]string) float64 {
	t.Helper()
	code, body, err := s.get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("sipedge %s GET /metrics: %d %v", s.name, code, err)
	}
	v, found := sumMetric(body, name, match)
	if !found {
		t.Fatalf("sipedge %s /metrics has no %s%v", s.name, name, match)
	}
	return v
}

// metricOr0 is metric for a counter vector that may have no sample yet.
func (s *sipedge) metricOr0(t testing.TB, name string, match map[string]string) float64 {
	t.Helper()
	code, body, err := s.get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("sipedge %s GET /metrics: %d %v", s.name, code, err)
	}
	v, _ := sumMetric(body, name, match)
	return v
}

// sumMetric parses the Prometheus text format just enough for counters.
func sumMetric(text, name string, match map[string]string) (float64, bool) {
	var sum float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		labels := map[string]string{}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				continue
			}
			for _, kv := range splitLabels(rest[1:end]) {
				k, v, ok := strings.Cut(kv, "=")
				if ok {
					labels[k] = strings.Trim(v, `"`)
				}
			}
			rest = rest[end+1:]
		} else if !strings.HasPrefix(rest, " ") {
			continue // a longer metric name
		}
		ok := true
		for k, v := range match {
			if labels[k] != v {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// splitLabels splits k="v",k2="v2" at commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	inQ, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			inQ = !inQ
		case ',':
			if !inQ {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// logLines returns the instance's JSON log lines whose msg contains substr.
func (s *sipedge) logLines(substr string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(s.proc.log(), "\n") {
		if !strings.Contains(l, substr) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// sipedgectl and confnode

// sipedgectl runs the CLI to completion and returns its stdout.
func (e *env) sipedgectl(args ...string) (string, error) {
	e.t.Helper()
	bin := binary(e.t, "sipedgectl")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--redis", e.redisAddr}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	e.t.Logf("sipedgectl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	return stdout.String(), err
}

// startConfnode runs the reference media node; it registers itself in
// Redis with heartbeats.
func (e *env) startConfnode(name string, extra ...string) (*proc, string) {
	e.t.Helper()
	bin := binary(e.t, "confnode")
	addr := loopback(freePort(e.t))
	args := append([]string{"--name", name, "--listen", addr,
		"--redis", e.redisAddr, "--log-format", "json", "--log-level", "debug",
		"--heartbeat-interval", "300ms"}, extra...)
	p := startProc(e.t, "confnode-"+name, bin, args...)
	return p, addr
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
