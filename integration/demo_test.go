package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a process's output from its writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// demo is `make run`'s script on free ports; its whole process group is
// killed when the test ends.
type demo struct {
	sipA, sipB     string
	adminA, adminB *sipedge // admin HTTP only (get, metric)
	redis          string
	out            *lockedBuffer
}

func startDemo(t *testing.T) *demo {
	t.Helper()
	requireTool(t, "sipp")
	bin := filepath.Dir(binary(t, "sipedge"))
	for _, b := range []string{"sipedgectl", "confnode"} {
		if filepath.Dir(binary(t, b)) != bin {
			t.Fatalf("binaries built in different directories")
		}
	}
	script, err := filepath.Abs("../scripts/run-demo.sh")
	if err != nil {
		t.Fatal(err)
	}
	pa, pb, node := freePort(t), freePort(t), freePortRun(t, 3) // confnodes take node, node+1, node+2
	d := &demo{sipA: loopback(pa), sipB: loopback(pb), out: &lockedBuffer{},
		adminA: &sipedge{name: "sipedge-a", admin: loopback(freePort(t))},
		adminB: &sipedge{name: "sipedge-b", admin: loopback(freePort(t))}}
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "BIN="+bin, "SIP_A="+strconv.Itoa(pa), "SIP_B="+strconv.Itoa(pb),
		"ADMIN_A="+d.adminA.admin, "ADMIN_B="+d.adminB.admin, "NODE_PORT="+strconv.Itoa(node),
		"EXTRA_ARGS=--log-format json")
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("demo output:\n%s", d.out.String())
		}
	})
	eventually(t, 30*time.Second, "the demo prints that it is up", func() string {
		if !strings.Contains(d.out.String(), "sipedge is up") {
			return "not yet"
		}
		return ""
	})
	eventually(t, 10*time.Second, "sipedge-a and sipedge-b ready", func() string {
		for _, s := range []*sipedge{d.adminA, d.adminB} {
			if code, body, err := s.get("/readyz"); err != nil || code != 200 {
				return fmt.Sprintf("%s: %d %s %v", s.name, code, body, err)
			}
		}
		return ""
	})
	var st struct {
		Instance struct {
			Redis string `json:"redis"`
		} `json:"instance"`
	}
	_, body, err := d.adminA.get("/api/status")
	if err != nil || json.Unmarshal([]byte(body), &st) != nil || st.Instance.Redis == "" {
		t.Fatalf("/api/status of sipedge-a: %v %q", err, body)
	}
	d.redis = st.Instance.Redis
	return d
}

// ctl runs sipedgectl against the demo's Redis and fails the test if it
// exits non-zero; try returns the error instead.
func (d *demo) ctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.try(t, args...)
	if err != nil {
		t.Fatalf("sipedgectl %v: %v\n%s", args, err, out)
	}
	return out
}

func (d *demo) try(t *testing.T, args ...string) (string, error) {
	out, err := exec.Command(binary(t, "sipedgectl"), append([]string{"--redis", d.redis}, args...)...).CombinedOutput()
	return string(out), err
}

// call starts the demo caller (RTP by echo) into conf as from, via target.
func (d *demo) call(t *testing.T, conf, from, target string) *proc {
	t.Helper()
	sc, _ := filepath.Abs("../configs/demo/caller.xml")
	return startProc(t, "sipp-"+from, requireTool(t, "sipp"), "-sf", sc, "-s", conf, "-key", "from", from,
		"-rtp_echo", "-mp", strconv.Itoa(sippMediaPort(t)), "-i", "127.0.0.1", "-p", strconv.Itoa(freePort(t)),
		"-m", "1", "-nostdin", "-trace_msg", "-message_file", filepath.Join(t.TempDir(), from+".msg"), target)
}

// Issue 10 item 1: `make run` demonstrates the product: two instances of
// one site with their own servers, three confnodes, callers that send RTP
// and are present; deservicing one instance gives 503 + Retry-After there
// while the other admits.
func TestDemo_TwoInstancesRTPCallersAndA503(t *testing.T) {
	d := startDemo(t)
	eventually(t, 10*time.Second, "both instances alive with their own servers", func() string {
		var doc struct {
			Instances []struct {
				Name, Server, Site string
				Alive              bool
			}
		}
		_ = json.Unmarshal([]byte(d.ctl(t, "--json", "instances", "list")), &doc)
		inst := doc.Instances
		if len(inst) != 2 || inst[0].Server != "host-a" || inst[1].Server != "host-b" || !inst[0].Alive || !inst[1].Alive {
			return d.ctl(t, "instances", "list")
		}
		return ""
	})
	eventually(t, 10*time.Second, "three nodes in the ring", func() string {
		if out := d.ctl(t, "nodes", "list"); strings.Count(out, "in ring") != 3 {
			return out
		}
		return ""
	})

	d.call(t, "demo", "alice", d.sipA)
	d.call(t, "demo", "bob", d.sipB)
	eventually(t, 10*time.Second, "alice and bob present with packets", func() string {
		var doc struct {
			Participants []struct {
				From    string `json:"from"`
				Present bool   `json:"present"`
				Packets uint64 `json:"packets"`
			} `json:"participants"`
		}
		out, _ := d.try(t, "--json", "conf", "show", "demo")
		_ = json.Unmarshal([]byte(out), &doc)
		present := 0
		for _, p := range doc.Participants {
			if p.Present && p.Packets > 0 {
				present++
			}
		}
		if present != 2 {
			return out
		}
		return ""
	})

	d.ctl(t, "profiles", "create", "p-a", "--name", "host-a upgrade", "--servers", "host-a")
	d.ctl(t, "profiles", "deservice", "p-a")
	eventually(t, 5*time.Second, "sipedge-a not ready", func() string {
		if code, body, _ := d.adminA.get("/readyz"); code != 503 {
			return body
		}
		return ""
	})
	a, err := sipNewDialog(d.sipA, "INVITE", "demo2", 3*time.Second)
	if err != nil || a.Code != 503 || a.Header("retry-after") == "" {
		t.Fatalf("INVITE to the deserviced sipedge-a: %+v %v, want 503 with Retry-After", a, err)
	}
	if b, err := sipNewDialog(d.sipB, "INVITE", "demo2", 3*time.Second); err != nil || b.Code != 200 {
		t.Fatalf("INVITE to sipedge-b: %+v %v, want 200", b, err)
	}
}

// liveDOM loads a page in headless Chromium and returns the DOM once its
// script has run.
func liveDOM(t *testing.T, url string) string {
	t.Helper()
	chromium := requireTool(t, "chromium")
	out, err := exec.Command(chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=5000", "--dump-dom", url).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v", url, err)
	}
	return string(out)
}

// Issue 10 item 2: the live page, loaded in a real browser during a
// running demo, shows every instance, the conference with its
// participants' Call-IDs, profiles, settings with their source, the
// refresh time, and a node whose probes fail as down, never as normal.
func TestLivePage_ShowsTheClusterInHeadlessChromium(t *testing.T) {
	d := startDemo(t)
	d.call(t, "live", "alice", d.sipA)
	d.call(t, "live", "bob", d.sipB)
	var callIDs []string
	eventually(t, 10*time.Second, "two participants recorded", func() string {
		var doc struct {
			Participants []struct {
				CallID string `json:"call_id"`
			} `json:"participants"`
		}
		out, _ := d.try(t, "--json", "conf", "show", "live")
		_ = json.Unmarshal([]byte(out), &doc)
		callIDs = nil
		for _, p := range doc.Participants {
			callIDs = append(callIDs, p.CallID)
		}
		if len(callIDs) != 2 {
			return out
		}
		return ""
	})
	d.ctl(t, "profiles", "create", "p-live", "--name", "live test", "--servers", "nobody")
	// A node that stops answering (SIGSTOP: probes time out, heartbeat ages).
	stopped := d.node(t, "confnode-3")
	_ = syscall.Kill(stopped, syscall.SIGSTOP)
	t.Cleanup(func() { _ = syscall.Kill(stopped, syscall.SIGCONT) })
	eventually(t, 15*time.Second, "confnode-3 down on both instances", func() string {
		_, body, _ := d.adminA.get("/api/cluster")
		var doc struct {
			Nodes []struct {
				Name   string   `json:"name"`
				DownOn []string `json:"down_on"`
			} `json:"nodes"`
		}
		_ = json.Unmarshal([]byte(body), &doc)
		for _, n := range doc.Nodes {
			if n.Name == "confnode-3" && len(n.DownOn) == 2 {
				return ""
			}
		}
		return body
	})

	// The CLI tells the same truth: the stopped node is down and never chosen.
	if out := d.ctl(t, "nodes", "list"); !strings.Contains(cliRow(out, "confnode-3"), "down") {
		t.Errorf("nodes list shows the stopped node as:\n%s", out)
	}
	for i := 0; i < 20; i++ {
		if out, _ := d.try(t, "ring", "lookup", "key"+strconv.Itoa(i)); strings.Contains(strings.SplitN(out, "\n", 2)[0], "confnode-3") {
			t.Errorf("ring lookup chose the stopped node:\n%s", out)
		}
	}

	dom := liveDOM(t, "http://"+d.adminA.admin+"/")
	for _, want := range append([]string{"sipedge-a", "sipedge-b", "host-a", "host-b", "refreshed 20",
		"p-live", "retry_after", "guests_only_timeout", ">live<"}, callIDs...) {
		if !strings.Contains(dom, want) {
			t.Errorf("live page lacks %q", want)
		}
	}
	row := tableRow(dom, "confnode-3")
	if !strings.Contains(row, ">down<") || strings.Contains(row, "class=\"ok\">normal") {
		t.Errorf("probe-down confnode-3 drawn as %q, want down", row)
	}
	if row := tableRow(dom, "confnode-1"); !strings.Contains(row, "class=\"ok\">normal") {
		t.Errorf("healthy confnode-1 drawn as %q, want normal in green", row)
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}

// tableRow returns the <tr> of a table that first names name.
func tableRow(dom, name string) string {
	i := strings.Index(dom, "<td>"+name+"</td>")
	if i < 0 {
		return ""
	}
	start := strings.LastIndex(dom[:i], "<tr>")
	end := strings.Index(dom[i:], "</tr>")
	if start < 0 || end < 0 {
		return ""
	}
	return dom[start : i+end]
}

// node finds the pid of one of the demo's confnodes.
func (d *demo) node(t *testing.T, name string) int {
	t.Helper()
	out, err := exec.Command("pgrep", "-f", filepath.Dir(binary(t, "confnode"))+"/confnode --name "+name+" ").Output()
	if err != nil {
		t.Fatalf("pgrep %s: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(out))[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// cliRow is the line of a sipedgectl table that starts with name.
func cliRow(table, name string) string {
	for _, l := range strings.Split(table, "\n") {
		if strings.HasPrefix(l, name+" ") {
			return l
		}
	}
	return ""
}

// sippMediaPort is a base port for sipp's -rtp_echo sockets (it binds the
// port and the next three, audio and video). It used to be drawn from
// 6000-9999, where sipp's own defaults live (-mp 6000, rtp_stream from
// 8000): another test's sipp held it once and this one failed to start.
func sippMediaPort(t *testing.T) int {
	t.Helper()
	return freePortRun(t, 4)
}
