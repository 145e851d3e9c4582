package integration

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Issue 9, item 5 (wiring): every goroutine has an owner that stops it,
// and the daemon's parts are built in dependency order.

// Calls (anchored, so media sessions, relay readers, participants leaving
// in the background, BYE transactions) leave no goroutine behind: once the
// calls are over and sipgo's transaction timers ran out, the daemon is back
// to about the goroutines it had before them.
func TestWiring_GoroutinesBackToBaselineAfterCalls(t *testing.T) {
	e := newEnv(t)
	e.startNode("n1")
	a := e.startSipedge("A", "--media-ports", mediaPorts(t), "--source-rate", "0")
	a.waitRing(t, 5*time.Second, "n1")
	time.Sleep(time.Second) // every loop started
	base := a.metric(t, "go_goroutines", nil)

	run := startUAC(t, "wiring", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("wiring-gr", 300)...), Rate: 100, Limit: 100, Hold: 100 * time.Millisecond,
		Timeout: 60 * time.Second})
	eventually(t, 5*time.Second, "calls up and anchored", func() string {
		if got := a.metric(t, "sipedge_relay_ports_in_use", nil); got < 4 {
			return fmt.Sprintf("%v ports", got)
		}
		return ""
	})
	// The peak is sampled for as long as calls run: a call on hold may have
	// no goroutine of its own at a given instant (the relay reads in epoll
	// workers, a dialog is data), so one sample can miss them all.
	peak := base
	for sampling := true; sampling; {
		select {
		case <-run.proc.done:
			sampling = false
		case <-time.After(20 * time.Millisecond):
			peak = max(peak, a.metric(t, "go_goroutines", nil))
		}
	}
	res := run.wait()
	res.requireAllSucceeded(t, 300)
	if peak <= base {
		t.Fatalf("goroutines %v with calls up, %v before: the calls ran no goroutine, the check proves nothing", peak, base)
	}
	// Finished transactions are kept 32 s (RFC 3261 timers): wait them out.
	const slack = 10
	eventually(t, 60*time.Second, "goroutines back to the baseline", func() string {
		if got := a.metric(t, "go_goroutines", nil); got > base+slack {
			return fmt.Sprintf("%v goroutines, %v before the calls (peak %v)", got, base, peak)
		}
		return ""
	})
	t.Logf("goroutines: %v before the calls, peak %v, %v after", base, peak, a.metric(t, "go_goroutines", nil))
	if got := a.metric(t, "sipedge_media_sessions_active", nil); got != 0 {
		t.Errorf("%v media sessions left", got)
	}
}

// A Redis that comes up after sipedge (both started by the same init
// system) is waited for within startup_retry: sipedge logs each attempt
// and then serves.
func TestWiring_RedisLateAtStartup_WaitedFor(t *testing.T) {
	server := requireTool(t, "redis-server")
	port := freePort(t)
	s := &sipedge{name: "late", port: freePort(t), admin: loopback(freePort(t))}
	s.proc = startProc(t, "sipedge-late", binary(t, "sipedge"), "--name", "late",
		"--redis", loopback(port), "--startup-retry", "30s",
		"--listen", loopback(s.port), "--advertise", loopback(s.port), "--admin", s.admin, "--log-format", "json")
	eventually(t, 10*time.Second, "sipedge retrying its Redis", func() string {
		if s.proc.exited() {
			t.Fatalf("sipedge exited without its Redis:\n%s", s.proc.log())
		}
		for _, l := range strings.Split(s.proc.log(), "\n") {
			if strings.Contains(l, "redis not reachable yet") && strings.Contains(l, loopback(port)) {
				return ""
			}
		}
		return "no retry logged yet"
	})
	startProc(t, "redis", server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no")
	eventually(t, 15*time.Second, "sipedge serving once Redis is up", func() string {
		if s.proc.exited() {
			t.Fatalf("sipedge exited: %v\n%s", s.proc.waitErr, s.proc.log())
		}
		code, body, err := s.get("/healthz")
		if err != nil {
			return err.Error()
		}
		if code != 200 {
			return fmt.Sprintf("HTTP %d: %s", code, body)
		}
		return ""
	})
	if !strings.Contains(s.proc.log(), "sipedge started") {
		t.Fatalf("no start line after Redis came up:\n%s", s.proc.log())
	}
}
