package integration

import (
	"strings"
	"testing"
	"time"
)

// Per-message cost of the call path (issue 9): with anchoring off, the
// ACK of a 2xx is forwarded from its bytes, without sipgo parsing it or
// starting a transaction (proxy/ack_raw.go). The node sees the ACK the
// parsed path would have sent it; with anchoring on, ACKs keep the parsed
// path.

// requireForwardedACKs checks the ACKs node received: one per call, each
// with sipedge's Via on top (its address, a sipedge branch), the caller's
// Via below it as the caller sent it (sipp's Via names its source and asks
// no rport: nothing to mark), Max-Forwards decremented and no sipedge
// Route left.
func requireForwardedACKs(t *testing.T, node *sippNode, se *sipedge, res uacResult, calls int) {
	t.Helper()
	sent := map[string]string{}
	for _, m := range res.Msgs {
		if m.Sent && m.Method == "ACK" {
			if v := m.Vias(); len(v) > 0 {
				sent[m.CallID()] = v[0]
			}
		}
	}
	acks := node.received(t, "ACK")
	if len(acks) != calls {
		t.Fatalf("node received %d distinct ACKs, want %d\n%s", len(acks), calls, node.summary())
	}
	for _, a := range acks {
		vias := a.Vias()
		if len(vias) != 2 {
			t.Fatalf("ACK of %s with Vias %q, want sipedge's and the caller's", a.CallID(), vias)
		}
		if !strings.Contains(vias[0], se.sipAddr()) || !strings.Contains(vias[0], "branch=z9hG4bKsE") {
			t.Errorf("ACK of %s: top Via %q is not sipedge's (%s, a sipedge branch)", a.CallID(), vias[0], se.sipAddr())
		}
		if want := sent[a.CallID()]; vias[1] != want {
			t.Errorf("ACK of %s: second Via %q, want the caller's %q", a.CallID(), vias[1], want)
		}
		if mf := a.Header("max-forwards"); mf != "69" {
			t.Errorf("ACK of %s: Max-Forwards %q, want 69", a.CallID(), mf)
		}
		if r := a.Header("route"); strings.Contains(r, ";se=") {
			t.Errorf("ACK of %s still carries sipedge's Route %q", a.CallID(), r)
		}
	}
}

// TestRawACK_AnchoringOff_ForwardedWithoutTransaction: every call's ACK
// reaches the node as the parsed path would send it, each is counted as an
// ACK request and as one forwarded from its bytes, and the BYEs after them
// end every dialog.
func TestRawACK_AnchoringOff_ForwardedWithoutTransaction(t *testing.T) {
	const calls = 40
	e := newEnv(t)
	node := e.startNode("n1")
	se := e.startSipedge("A", "--media-ports=")
	res := runUAC(t, "raw-ack", uac{Scenario: "uac_call.xml", Target: se.sipAddr(),
		Rows: callRows(se.sipAddr(), ids("rawack", calls)...), Rate: 40, Hold: 20 * time.Millisecond})
	res.requireAllSucceeded(t, calls)
	requireForwardedACKs(t, node, se, res, calls)
	if got := se.metric(t, "sipedge_sip_acks_raw_total", nil); got != calls {
		t.Errorf("sipedge_sip_acks_raw_total = %v, want %d (every ACK of a 2xx)", got, calls)
	}
	if got := se.metric(t, "sipedge_sip_requests_total", map[string]string{"method": "ACK"}); got != calls {
		t.Errorf("sipedge_sip_requests_total{method=ACK} = %v, want %d", got, calls)
	}
	if byes := node.received(t, "BYE"); len(byes) != calls {
		t.Errorf("node received %d distinct BYEs, want %d", len(byes), calls)
	}
	e.waitNoConferences(5 * time.Second)
}

// TestRawACK_AnchoringOn_KeepsTheParsedPath: with media anchoring on an
// ACK may carry the SDP answer, so none takes the raw path; the node gets
// the same ACKs.
func TestRawACK_AnchoringOn_KeepsTheParsedPath(t *testing.T) {
	const calls = 10
	e := newEnv(t)
	node := e.startNode("n1")
	se := e.startSipedge("A", "--media-ports", mediaPorts(t))
	res := runUAC(t, "parsed-ack", uac{Scenario: "uac_call.xml", Target: se.sipAddr(),
		Rows: callRows(se.sipAddr(), ids("parsedack", calls)...), Rate: 20, Hold: 20 * time.Millisecond})
	res.requireAllSucceeded(t, calls)
	requireForwardedACKs(t, node, se, res, calls)
	if got := se.metricOr0(t, "sipedge_sip_acks_raw_total", nil); got != 0 {
		t.Errorf("sipedge_sip_acks_raw_total = %v with anchoring on, want 0", got)
	}
	if got := se.metric(t, "sipedge_sip_requests_total", map[string]string{"method": "ACK"}); got != calls {
		t.Errorf("sipedge_sip_requests_total{method=ACK} = %v, want %d", got, calls)
	}
	e.waitNoConferences(5 * time.Second)
}
