package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Issue 3, item 9: an instance taken out of service by a deservice profile
// (SPEC §2–4). Every change here is a plain Redis write unless the test
// says sipedgectl: that path must work on its own.

// requireRejected sends a new INVITE, REGISTER and SUBSCRIBE to target and
// checks each is answered 503 with Retry-After: retryAfter. It returns
// their Call-IDs.
func requireRejected(t *testing.T, target, user, retryAfter string) []string {
	t.Helper()
	var callIDs []string
	for _, method := range []string{"INVITE", "REGISTER", "SUBSCRIBE"} {
		a, err := sipNewDialog(target, method, user, 3*time.Second)
		if err != nil {
			t.Fatalf("%s to %s: %v", method, target, err)
		}
		if a.Code != 503 {
			t.Fatalf("%s to %s answered %d %s, want 503\n%s", method, target, a.Code, a.Reason, a.Raw)
		}
		if got := a.Header("retry-after"); got != retryAfter {
			t.Errorf("%s to %s: 503 with Retry-After %q, want %q\n%s", method, target, got, retryAfter, a.Raw)
		}
		callIDs = append(callIDs, a.CallID)
	}
	return callIDs
}

// requireAdmits places calls and a REGISTER through s and checks they
// succeed end to end.
func requireAdmits(t *testing.T, s *sipedge, name string, confs ...string) {
	t.Helper()
	runUAC(t, name, uac{Scenario: "uac_call.xml", Target: s.sipAddr(),
		Rows: callRows(s.sipAddr(), confs...), Rate: 20, Hold: 20 * time.Millisecond}).
		requireAllSucceeded(t, len(confs))
	a, err := sipNewDialog(s.sipAddr(), "REGISTER", name+"-reg", 3*time.Second)
	if err != nil || a.Code != 200 {
		t.Fatalf("REGISTER through %s: %d %v\n%s", s.name, a.Code, err, a.Raw)
	}
}

// waitDeserviced waits until s reports itself deserviced, held back or not.
func waitDeserviced(t *testing.T, s *sipedge, heldBack bool) {
	t.Helper()
	s.waitInstance(t, 5*time.Second, fmt.Sprintf("deserviced, held back %v", heldBack), func(d svcStatusDoc) string {
		if !d.Instance.Deserviced || d.Instance.HeldBack != heldBack {
			return "not yet"
		}
		return ""
	})
}

// 9a: instance A deserviced mid-call. Its established calls end normally
// (BYE → 200); new INVITE, REGISTER and SUBSCRIBE to A get 503 with the
// configured Retry-After; OPTIONS to A gets 200; B keeps admitting; A
// drains to "drained" and its /readyz says 503 all along.
func TestDeserviceInstance_MidCall_CallsFinish_NewDialogs503(t *testing.T) {
	c := newCluster(t, twoInstances, []string{"n1", "n2"})
	a, b := c.inst[0], c.inst[1]
	c.writeSettings("retry_after", "17")

	const heldCalls = 4
	held := startUAC(t, "held-A", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("t9a-held", heldCalls)...), Rate: 20, Hold: 6 * time.Second})
	a.waitInstance(t, 5*time.Second, "calls established", func(d svcStatusDoc) string {
		if d.Instance.Dialogs != heldCalls {
			return fmt.Sprintf("%d dialogs", d.Instance.Dialogs)
		}
		return ""
	})

	c.writeProfile("maint", "srvA", "deservice")
	waitDeserviced(t, a, false)
	a.waitReadyz(t, 2*time.Second, 503)
	if got := b.readyz(); got != 200 {
		t.Errorf("B /readyz = %d while A alone is deserviced, want 200", got)
	}
	a.waitInstance(t, 2*time.Second, "state draining", func(d svcStatusDoc) string {
		if d.Instance.State != "draining" {
			return "state " + d.Instance.State
		}
		return ""
	})

	follow := c.startCtl("drain", "--wait", "--timeout", "30s", "A")
	rejected := requireRejected(t, a.sipAddr(), "t9a-new", "17")
	if code, err := sipOptions(a.sipAddr(), 2*time.Second); err != nil || code != 200 {
		t.Errorf("OPTIONS to deserviced A: %d %v, want 200", code, err)
	}
	requireAdmits(t, b, "t9a-B", ids("t9a-b", 3)...)

	res := held.wait()
	res.requireAllSucceeded(t, heldCalls)
	byes := c.received(t, "BYE")
	for _, id := range res.callIDs("INVITE") {
		if _, ok := byes[id]; !ok {
			t.Errorf("held call %s: its BYE never reached a node", id)
		}
	}
	a.waitInstance(t, 5*time.Second, "state drained", func(d svcStatusDoc) string {
		if d.Instance.State != "drained" || d.Instance.Dialogs != 0 {
			return fmt.Sprintf("state %s, %d dialogs", d.Instance.State, d.Instance.Dialogs)
		}
		return ""
	})
	c.waitInstanceHash(3*time.Second, "A", "state", "drained")
	if err := follow.wait(t, 10*time.Second); err != nil {
		t.Errorf("sipedgectl drain --wait A: %v\n%s%s", err, follow.stdout.String(), follow.stderr.String())
	}
	if got := a.readyz(); got != 503 {
		t.Errorf("drained A /readyz = %d, want 503", got)
	}

	// Each rejection is logged with its reason and Call-ID, and counted.
	logged := map[string]string{}
	for _, l := range a.logLines("Participant failed to join conference") {
		id, _ := l["call_id"].(string)
		reason, _ := l["reason"].(string)
		logged[id] = reason
	}
	for _, id := range rejected {
		if logged[id] != reasonMaintenance {
			t.Errorf("rejection of %s logged with reason %q, want %q (logged: %v)", id, logged[id], reasonMaintenance, logged)
		}
	}
	if got := a.metric(t, "sipedge_admission_rejects_total", map[string]string{"reason": causeDeserviced}); got != float64(len(rejected)) {
		t.Errorf("A sipedge_admission_rejects_total{reason=%q} = %v, want %d", causeDeserviced, got, len(rejected))
	}
	if _, body, err := b.get("/metrics"); err != nil {
		t.Errorf("B /metrics: %v", err)
	} else if got, _ := sumMetric(body, "sipedge_admission_rejects_total", nil); got != 0 {
		t.Errorf("B rejected %v new dialogs, want 0", got)
	}
}

// 9b: with every instance of the site deserviced nobody would serve, so
// both keep admitting and say the deservice is held back. Restoring B
// makes A reject; B dying makes A the last one alive, and it admits again.
func TestDeserviceAll_HeldBack_LastAliveKeepsAdmitting(t *testing.T) {
	c := newCluster(t, twoInstances, []string{"n1", "n2"})
	a, b := c.inst[0], c.inst[1]

	c.writeProfile("all", "srvA, srvB", "deservice")
	waitDeserviced(t, a, true)
	waitDeserviced(t, b, true)
	c.waitInstanceHash(3*time.Second, "A", "held_back", "1")
	requireAdmits(t, a, "t9b-A", ids("t9b-a", 3)...)
	requireAdmits(t, b, "t9b-B", ids("t9b-b", 3)...)
	if held := a.logLines("held back"); len(held) == 0 {
		t.Errorf("A logged no warning that its deservice is held back")
	}

	// B back in service: A is no longer the last one.
	c.writeProfile("all", "srvA", "deservice")
	waitDeserviced(t, a, false)
	requireRejected(t, a.sipAddr(), "t9b-rej", "30")

	// B dies: once its heartbeat is stale, A is the last alive and admits.
	b.proc.kill()
	waitDeserviced(t, a, true)
	requireAdmits(t, a, "t9b-last", ids("t9b-last", 3)...)
}

// 9c: an instance in sipedge:exceptions keeps admitting while deserviced;
// taken out of the exceptions it rejects. Plain SADD one way, sipedgectl
// the other.
func TestDeserviceInstance_InExceptions_KeepsAdmitting(t *testing.T) {
	c := newCluster(t, twoInstances, []string{"n1", "n2"})
	a := c.inst[0]
	if err := c.rdb.SAdd(t.Context(), "sipedge:exceptions", "A").Err(); err != nil {
		t.Fatalf("SADD sipedge:exceptions A: %v", err)
	}
	c.writeProfile("maint", "srvA", "deservice")
	a.waitInstance(t, 5*time.Second, "deserviced but excepted", func(d svcStatusDoc) string {
		if !d.Instance.Deserviced || !d.Instance.HeldBack {
			return "not yet"
		}
		return ""
	})
	requireAdmits(t, a, "t9c-exc", ids("t9c", 3)...)

	out := c.ctlOK("exceptions", "remove", "A")
	if !strings.Contains(out, "A") {
		t.Errorf("sipedgectl exceptions remove A printed %q", out)
	}
	waitDeserviced(t, a, false)
	requireRejected(t, a.sipAddr(), "t9c-rej", "30")
	if got := a.metric(t, "sipedge_admission_rejects_total", map[string]string{"reason": causeDeserviced}); got != 3 {
		t.Errorf("rejects after leaving the exceptions = %v, want 3", got)
	}
}
