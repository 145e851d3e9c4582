package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 10 item 6: `sipedgectl rollout` through the real binaries. A call
// on the first node keeps it draining (the call continues, no BYE); the
// rollout goes on only once it hangs up, runs the hook per node in turn,
// survives being interrupted mid-drain (the same command resumes), and
// leaves every node back in service.
func TestRollout_UpgradesNodesInTurnWithoutDroppingACall(t *testing.T) {
	m := newMediaEnv(t, []string{"slow_start", "1"}, nil)
	m.startConfnode("cn2", "--proxy", m.se.sipAddr())
	m.se.waitRing(t, 5*time.Second, "cn1", "cn2")
	caller := m.join("caller", "roll1")
	var first string
	// The placement key is written with the instance's counts (up to a
	// beat after the call is up).
	eventually(t, 5*time.Second, "conference roll1 placed", func() string {
		if first = m.confNode("roll1"); first == "" {
			return "no sipedge:conf:roll1 node yet"
		}
		return ""
	})
	second := map[string]string{"cn1": "cn2", "cn2": "cn1"}[first]
	log := filepath.Join(t.TempDir(), "hook.log")
	args := []string{"rollout", first, second, "--interval", "100ms", "--hook", "echo $SIPEDGE_NODE >> " + log}

	ctl := m.startCtl(args...)
	m.se.waitNodeState(t, 5*time.Second, first, "draining", func(svcNode) string { return "" })
	// Interrupted while the call holds the node: progress stays in Redis.
	time.Sleep(300 * time.Millisecond)
	_ = ctl.cmd.Process.Signal(syscall.SIGINT)
	if err := ctl.wait(t, 5*time.Second); err == nil {
		t.Fatalf("interrupted rollout exited 0:\n%s", ctl.stdout.String())
	}
	if got := m.readField("sipedge:rollout", "phase"); got != "drain" {
		t.Fatalf("stored phase after the interrupt = %q, want drain", got)
	}
	if err := caller.noBye(500 * time.Millisecond); err != nil {
		t.Fatalf("the call on the draining node was ended: %v", err)
	}

	resumed := m.startCtl(args...)
	time.Sleep(500 * time.Millisecond)
	if b, _ := os.ReadFile(log); len(b) != 0 {
		t.Fatalf("hook ran while the call was still on %s: %q", first, b)
	}
	if err := caller.hangup(); err != nil {
		t.Fatal(err)
	}
	if err := resumed.wait(t, 30*time.Second); err != nil {
		t.Fatalf("resumed rollout: %v\n%s\n%s", err, resumed.stdout.String(), resumed.stderr.String())
	}
	out := resumed.stdout.String()
	t.Logf("rollout output:\n%s", out)
	if !strings.Contains(out, "resuming the stored rollout at node "+first+" (1/2), phase drain") {
		t.Errorf("no resume line:\n%s", out)
	}
	b, _ := os.ReadFile(log)
	if got := strings.Fields(string(b)); strings.Join(got, " ") != first+" "+second {
		t.Errorf("hook ran for %v, want %s then %s", got, first, second)
	}
	for _, n := range []string{"cn1", "cn2"} {
		m.se.waitNodeState(t, 5*time.Second, n, "normal", func(svcNode) string { return "" })
	}
	// New conferences reach both nodes again.
	m.se.waitRing(t, 5*time.Second, "cn1", "cn2")
}
