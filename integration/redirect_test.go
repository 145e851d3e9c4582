package integration

import (
	"strings"
	"testing"
	"time"
)

// Issue 10 item 6 (ClusterCATS seed): with deservice_answer 302 a
// deserviced instance answers a new INVITE with 302 whose Contact is the
// normal instance of its site; the caller that follows it is admitted
// there. In-dialog traffic is not involved: it still passes.
func TestRedirect_DeservicedInstanceAnswers302ToTheStandby(t *testing.T) {
	e := newEnv(t)
	node := e.startNode("n1")
	e.registerNode("n1", node.addr())
	a := e.startSipedge("A", "--deservice-answer", "302")
	b := e.startSipedge("B")
	a.waitRing(t, 5*time.Second, "n1")
	b.waitRing(t, 5*time.Second, "n1")
	e.writeProfile("up", "srvA", "deservice")
	a.waitReadyz(t, 5*time.Second, 503)

	res, err := sipNewDialog(a.sipAddr(), "INVITE", "conf302", 3*time.Second)
	if err != nil || res.Code != 302 {
		t.Fatalf("INVITE to the deserviced A: %+v %v, want 302", res, err)
	}
	contact := res.Header("contact")
	if !strings.Contains(contact, "sip:conf302@"+b.sipAddr()) {
		t.Fatalf("302 Contact %q, want sip:conf302@%s (the standby B)", contact, b.sipAddr())
	}
	if got := a.metric(t, "sipedge_admission_rejects_total", map[string]string{"reason": "redirected"}); got != 1 {
		t.Errorf("redirects counted %v, want 1", got)
	}
	if res, err := sipNewDialog(b.sipAddr(), "INVITE", "conf302", 3*time.Second); err != nil || res.Code != 200 {
		t.Fatalf("INVITE following the redirect to B: %+v %v, want 200", res, err)
	}
	// Without a standby (B deserviced too) A holds its deservice back and admits.
	e.writeProfile("up", "srvA,srvB", "deservice")
	a.waitReadyz(t, 5*time.Second, 200)
	if res, err := sipNewDialog(a.sipAddr(), "INVITE", "conf302b", 3*time.Second); err != nil || res.Code != 200 {
		t.Fatalf("INVITE to A, last normal instance: %+v %v, want 200", res, err)
	}
}
