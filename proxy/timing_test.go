package proxy

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sipedge/sipedge/ring"
)

func observations(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// Issue 10 item 3: a new INVITE's first and final response times are
// observed once each; the final by its class.
func TestInviteTiming_FirstAndFinalResponse(t *testing.T) {
	node := newPeer(t)
	p := startProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr(), Transport: "udp"}})
	caller := newPeer(t)
	caller.send(p.Addr(), invite(caller, "sip:conf1@"+p.Addr(), "call-t1", "z9hG4bK-t1", 70))
	inv := node.recv("INVITE ")
	node.send(p.Addr(), answer(inv, 180, "Ringing", "node1", node.addr()))
	caller.recv("SIP/2.0 180")
	node.send(p.Addr(), answer(inv, 486, "Busy Here", "node1", node.addr()))
	caller.recv("SIP/2.0 486")
	waitFor(t, func() bool { return observations(t, p.timing.final[4]) == 1 }, "final 4xx observed")
	if n := observations(t, p.timing.first); n != 1 {
		t.Errorf("first responses observed %d, want 1 (the 180; later ones are not first)", n)
	}
	if n := observations(t, p.timing.final[2]); n != 0 {
		t.Errorf("2xx observed %d, want 0", n)
	}
}
