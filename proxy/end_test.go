package proxy

import (
	"context"
	"strings"
	"testing"

	"github.com/sipedge/sipedge/ring"
)

func TestProxy_EndDialogs_ByeBothLegsWithReason(t *testing.T) {
	node := newPeer(t)
	adm := &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}}
	px := startProxy(t, adm)
	caller := newPeer(t)
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "end-1", "z9hG4bK-e1", 70))
	inv := node.recv("INVITE ")
	node.send(px.Addr(), answer(inv, 200, "OK", "node9", node.addr()))
	caller.recv("SIP/2.0 200")
	waitFor(t, func() bool { return px.ActiveDialogs() == 1 }, "dialog recorded")

	if got := px.Dialogs(); len(got) != 1 || got[0].Node != "n1" || got[0].ConfID != "conf1" {
		t.Fatalf("Dialogs() = %+v", got)
	}
	n := px.EndDialogs(context.Background(), func(d Dialog) bool { return d.Node == "n1" }, "drain timeout")
	if n != 1 {
		t.Fatalf("ended %d dialogs, want 1", n)
	}
	toNode := node.recv("BYE ")
	toCaller := caller.recv("BYE ")
	for leg, m := range map[string]string{"node": toNode, "caller": toCaller} {
		if r := header(m, "Reason"); len(r) != 1 || r[0] != `SIP;cause=200;text="drain timeout"` {
			t.Errorf("%s BYE Reason = %q", leg, r)
		}
		if id := header(m, "Call-ID"); len(id) != 1 || id[0] != "end-1" {
			t.Errorf("%s BYE Call-ID = %q", leg, id)
		}
	}
	if !strings.HasPrefix(toNode, "BYE sip:"+node.addr()) {
		t.Errorf("node BYE not sent to the node's Contact:\n%s", toNode)
	}
	if f := header(toNode, "From")[0]; !strings.Contains(f, "tag=caller1") {
		t.Errorf("node BYE From = %q, want the caller's tag", f)
	}
	if cs := header(toNode, "CSeq")[0]; cs != "2 BYE" {
		t.Errorf("node BYE CSeq = %q, want one above the INVITE's", cs)
	}
	if f := header(toCaller, "From")[0]; !strings.Contains(f, "tag=node9") {
		t.Errorf("caller BYE From = %q, want the node's tag", f)
	}
	if px.ActiveDialogs() != 0 {
		t.Errorf("dialog still held after being ended")
	}
	waitFor(t, func() bool { return strings.Contains(strings.Join(adm.events(), ","), "end conf1 n1") }, "dialog end recorded")
}
