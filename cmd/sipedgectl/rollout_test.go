package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// rolloutEnv: three nodes of one site (none is the last, so each drains),
// a one-second slow start, calls on n1 that end after a while.
func rolloutEnv(t *testing.T) (*miniredis.Miniredis, string) {
	t.Helper()
	mr := miniredis.RunT(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		putNode(mr, n, "127.0.0.1:5071", "100")
	}
	mr.HSet(k.Settings(), "slow_start", "1")
	mr.HSet(k.NodeCalls(), "n1", "2")
	go func() {
		time.Sleep(300 * time.Millisecond)
		mr.HSet(k.NodeCalls(), "n1", "0") // the last calls on n1 end
	}()
	return mr, filepath.Join(t.TempDir(), "hook.log")
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// Issue 10 item 6: each node in turn goes to maintenance, waits until its
// calls are gone, runs the hook, returns and ramps up before the next.
func TestRollout_EachNodeDrainedHookedReturnedInTurn(t *testing.T) {
	mr, log := rolloutEnv(t)
	out := mustCtl(t, mr, "rollout", "n1", "n2", "--interval", "50ms",
		"--hook", `echo $SIPEDGE_NODE >> `+log)
	if got := readLines(t, log); strings.Join(got, " ") != "n1 n2" {
		t.Fatalf("hook ran for %v, want n1 n2 in order\n%s", got, out)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if v := mr.HGet(k.Node(n), "maintenance"); v != "0" {
			t.Errorf("%s maintenance = %q after the rollout, want 0", n, v)
		}
	}
	for _, want := range []string{"n1: drained after", "n1: slow start", "n1: back at full weight", "n2: back at full weight", "rollout done: n1 n2"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if i := strings.Index(out, "n1: back at full weight"); i < 0 || i > strings.Index(out, "[2/2] n2: ") {
		t.Errorf("n2 started before n1 was back at full weight:\n%s", out)
	}
	if phase := mr.HGet(k.Rollout(), "phase"); phase != "done" {
		t.Errorf("stored phase %q, want done", phase)
	}
}

// A failing hook stops the rollout with its node in maintenance; the same
// command again resumes at that node's hook, without redoing n1.
func TestRollout_FailedHookStopsAndResumes(t *testing.T) {
	mr, log := rolloutEnv(t)
	okFile := filepath.Join(t.TempDir(), "ok")
	hook := `echo $SIPEDGE_NODE >> ` + log + `; test $SIPEDGE_NODE != n2 || test -f ` + okFile
	_, _, err := ctl(t, mr, "rollout", "n1", "n2", "--interval", "50ms", "--hook", hook)
	if err == nil || !strings.Contains(err.Error(), "rollout stopped at node n2 (2/2)") {
		t.Fatalf("err = %v, want the rollout stopped at n2", err)
	}
	if mr.HGet(k.Node("n2"), "maintenance") != "1" || mr.HGet(k.Rollout(), "phase") != "hook" {
		t.Fatalf("after the failed hook: n2 maintenance %q, stored phase %q", mr.HGet(k.Node("n2"), "maintenance"), mr.HGet(k.Rollout(), "phase"))
	}
	status := mustCtl(t, mr, "rollout", "--status")
	if !strings.Contains(status, "node n2 (2/2), phase hook") {
		t.Errorf("status: %q", status)
	}
	if _, _, err := ctl(t, mr, "rollout", "n3"); err == nil || !strings.Contains(err.Error(), "under way") {
		t.Errorf("another rollout while one is stored: err = %v", err)
	}
	if err := os.WriteFile(okFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustCtl(t, mr, "rollout", "n1", "n2", "--interval", "50ms", "--hook", hook)
	if !strings.Contains(out, "resuming the stored rollout at node n2 (2/2), phase hook") {
		t.Errorf("no resume line:\n%s", out)
	}
	if got := readLines(t, log); strings.Join(got, " ") != "n1 n2 n2" {
		t.Errorf("hook ran for %v, want n1 n2 n2 (n2 again after the fix, n1 not redone)", got)
	}
	if mr.HGet(k.Node("n2"), "maintenance") != "0" {
		t.Error("n2 still in maintenance after the resumed rollout")
	}
}

func TestRollout_UsageErrors(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "n1", "127.0.0.1:5071", "100")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"rollout"}, "missing NODE"},
		{[]string{"rollout", "ghost"}, `node "ghost"`},
		{[]string{"rollout", "n1", "n1"}, "named twice"},
		{[]string{"rollout", "--resume"}, "no rollout stored"},
	} {
		if _, _, err := ctl(t, mr, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}
