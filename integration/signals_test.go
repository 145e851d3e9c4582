package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignals_HupReloadsRetryAfterAndKeepsRunning rewrites the config file
// and sends SIGHUP: the new retry_after is in the next 503, the change is
// logged with field, old and new value, a bad file is logged at error and
// changes nothing, and the process never exits.
func TestSignals_HupReloadsRetryAfterAndKeepsRunning(t *testing.T) {
	e := newEnv(t)
	file := filepath.Join(t.TempDir(), "sipedge.yaml")
	writeFile(t, file, "retry_after: 30\n")
	s := e.startSipedge("a", "--config", file, "--media-ports=")
	// No node registered: every INVITE gets 503 with settings' Retry-After.
	requireRetryAfter(t, s, "30")

	writeFile(t, file, "retry_after: 7\n")
	signal(t, s, syscall.SIGHUP)
	requireRetryAfter(t, s, "7")
	eventually(t, 3*time.Second, "the change is logged", func() string {
		for _, l := range s.logLines("reload: setting changed") {
			if l["field"] == "retry_after" && l["old"] == "30" && l["new"] == "7" {
				return ""
			}
		}
		return "no reload line for retry_after 30 -> 7"
	})

	writeFile(t, file, "retry_after: 999999\n") // out of range
	signal(t, s, syscall.SIGHUP)
	eventually(t, 3*time.Second, "the bad file is logged at error", func() string {
		for _, l := range s.logLines("reload: configuration rejected") {
			if l["level"] == "error" && strings.Contains(l["error"].(string), "retry_after") {
				return ""
			}
		}
		return "no error line naming retry_after"
	})
	requireRetryAfter(t, s, "7")
	signal(t, s, syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	if s.proc.exited() {
		t.Fatalf("sipedge exited after SIGHUP: %v", s.proc.waitErr)
	}
	if code, _, err := s.get("/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz after SIGHUP: %d %v", code, err)
	}
}

// TestSignals_TermDrainsThenExitsWhenTheLastCallEnds: with two calls up,
// SIGTERM turns new calls away with 503 and Retry-After, /readyz says 503,
// Redis shows the instance draining, the BYE of a running call still
// reaches the node, and sipedge exits 0 as soon as the last call ended,
// long before the grace period.
func TestSignals_TermDrainsThenExitsWhenTheLastCallEnds(t *testing.T) {
	e := newEnv(t)
	node := startGoUAS(t)
	e.registerNode("n1", node.addr())
	s := e.startSipedge("a", "--media-ports=", "--shutdown-grace", "60s", "--retry-after", "9")
	s.waitRing(t, 10*time.Second, "n1")
	uac := startGoUAC(t, s.sipAddr())
	var calls []uacDialog
	for i := 0; i < 2; i++ {
		d, err := uac.invite("drain1", 5*time.Second)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		uac.sendAck(d)
		calls = append(calls, d)
	}
	s.waitReadyz(t, 3*time.Second, 200)

	start := time.Now()
	signal(t, s, syscall.SIGTERM)
	s.waitReadyz(t, 3*time.Second, 503)
	e.waitInstanceHash(3*time.Second, "a", "state", "draining")
	k, _ := uac.inviteRequest("drain2")
	a, err := uac.answer(k, 5*time.Second)
	if err != nil || a.Code != 503 || a.Header("retry-after") != "9" {
		t.Fatalf("new INVITE while draining: %d %q Retry-After %q (%v), want 503 with Retry-After 9",
			a.Code, a.Reason, a.Header("retry-after"), err)
	}
	if !hasLogLine(s, "Participant failed to join conference", "reason", "Instance shutting down") {
		t.Error(`no "Participant failed to join conference" line with reason "Instance shutting down"`)
	}

	if code, err := uac.bye(calls[0], 5*time.Second); err != nil || code != 200 {
		t.Fatalf("BYE of a running call while draining: %d %v, want 200", code, err)
	}
	if node.received(calls[0].callID, "BYE") != 1 {
		t.Fatalf("the node did not get the BYE of %s", calls[0].callID)
	}
	time.Sleep(500 * time.Millisecond)
	if s.proc.exited() {
		t.Fatalf("sipedge exited with a call still up: %v", s.proc.waitErr)
	}
	if code, err := uac.bye(calls[1], 5*time.Second); err != nil || code != 200 {
		t.Fatalf("BYE of the last call: %d %v, want 200", code, err)
	}
	waitExit(t, s.proc, 10*time.Second)
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("exit %v after SIGTERM: it should follow the last BYE, not the 60 s grace", took)
	}
	if s.proc.waitErr != nil {
		t.Errorf("exit status %v, want 0", s.proc.waitErr)
	}
	for _, want := range []string{"shutdown: drain started", "shutdown: no dialogs left, exiting", "sipedge stopped"} {
		if len(s.logLines(want)) == 0 {
			t.Errorf("no %q log line", want)
		}
	}
	if l := s.logLines("shutdown: drain started"); len(l) > 0 && l[0]["dialogs"] != float64(2) {
		t.Errorf("drain started with dialogs %v, want 2", l[0]["dialogs"])
	}
}

// TestSignals_TermExitsAtTheGracePeriodWithCallsUp: calls that never end
// keep sipedge no longer than shutdown_grace; it says so and exits 0.
func TestSignals_TermExitsAtTheGracePeriodWithCallsUp(t *testing.T) {
	e := newEnv(t)
	node := startGoUAS(t)
	e.registerNode("n1", node.addr())
	s := e.startSipedge("a", "--media-ports=", "--shutdown-grace", "2s")
	s.waitRing(t, 10*time.Second, "n1")
	uac := startGoUAC(t, s.sipAddr())
	for i := 0; i < 2; i++ {
		d, err := uac.invite("grace1", 5*time.Second)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		uac.sendAck(d)
	}
	start := time.Now()
	signal(t, s, syscall.SIGTERM)
	time.Sleep(time.Second)
	if s.proc.exited() {
		t.Fatalf("sipedge exited before the grace period: %v", s.proc.waitErr)
	}
	waitExit(t, s.proc, 10*time.Second)
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("exited %v after SIGTERM, before the 2 s grace", took)
	}
	if s.proc.waitErr != nil {
		t.Errorf("exit status %v, want 0", s.proc.waitErr)
	}
	if !hasLogLine(s, "shutdown: grace period over, exiting with dialogs up", "reason", "grace period over") {
		t.Error("no grace-period exit line")
	}
	if l := s.logLines("shutdown: grace period over"); len(l) > 0 && l[0]["dialogs"] != float64(2) {
		t.Errorf("grace exit with dialogs %v, want 2", l[0]["dialogs"])
	}
}

// TestSignals_SecondTermExitsAtOnce: a second SIGTERM ends the drain.
func TestSignals_SecondTermExitsAtOnce(t *testing.T) {
	e := newEnv(t)
	node := startGoUAS(t)
	e.registerNode("n1", node.addr())
	s := e.startSipedge("a", "--media-ports=", "--shutdown-grace", "60s")
	s.waitRing(t, 10*time.Second, "n1")
	uac := startGoUAC(t, s.sipAddr())
	d, err := uac.invite("second1", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	uac.sendAck(d)
	signal(t, s, syscall.SIGTERM)
	s.waitReadyz(t, 3*time.Second, 503)
	signal(t, s, syscall.SIGTERM)
	waitExit(t, s.proc, 10*time.Second)
	if !hasLogLine(s, "shutdown: second signal, exiting now", "reason", "second signal") {
		t.Error("no second-signal exit line")
	}
}

func writeFile(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func signal(t testing.TB, s *sipedge, sig syscall.Signal) {
	t.Helper()
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

func hasLogLine(s *sipedge, msg, field, value string) bool {
	for _, l := range s.logLines(msg) {
		if l[field] == value {
			return true
		}
	}
	return false
}

// requireRetryAfter waits until a new INVITE gets 503 with Retry-After want.
func requireRetryAfter(t testing.TB, s *sipedge, want string) {
	t.Helper()
	eventually(t, 5*time.Second, "503 with Retry-After "+want, func() string {
		a, err := sipNewDialog(s.sipAddr(), "INVITE", "conf1", 2*time.Second)
		if err != nil {
			return err.Error()
		}
		if a.Code != 503 || a.Header("retry-after") != want {
			return a.Raw
		}
		return ""
	})
}
