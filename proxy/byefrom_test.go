package proxy

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/ring"
)

// recvFrom is the next message starting with prefix and the address it came from.
func (p *peer) recvFrom(prefix string) (string, string) {
	p.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	buf := make([]byte, 65535)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		n, src, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			p.t.Fatalf("waiting for %q: %v", prefix, err)
		}
		if m := string(buf[:n]); strings.HasPrefix(m, prefix) {
			return m, src.String()
		}
	}
}

// TestEndDialogs_ByeLeavesFromTheAddressOfEachLeg: sipedge's own BYE to
// each leg leaves from the listen address that leg uses (the one its
// Record-Route named) and its Via names it, not the first listen address.
func TestEndDialogs_ByeLeavesFromTheAddressOfEachLeg(t *testing.T) {
	node := newPeer(t)
	adm := &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}}
	px, err := New(Options{Listen: "127.0.0.1:0", ListenExtra: []string{"127.0.0.2:0"},
		RouteSecret: "test-secret", UserAgent: "sipedge-test"}, adm, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	serve(t, px)
	addrs := px.ListenAddrs()
	for i, called := range addrs {
		t.Run("caller on "+called, func(t *testing.T) {
			caller := newPeer(t)
			id := "leg-" + strconv.Itoa(i)
			caller.send(called, invite(caller, "sip:conf1@"+called, id, "z9hG4bK-l"+id, 70))
			inv, invFrom := node.recvFrom("INVITE ")
			node.send(invFrom, answer(inv, 200, "OK", "node9", node.addr()))
			caller.recv("SIP/2.0 200")
			waitFor(t, func() bool { return px.ActiveDialogs() == 1 }, "dialog recorded")

			px.EndDialogs(context.Background(), func(d Dialog) bool { return d.CallID == id }, "conference ended")
			toNode, nodeFrom := node.recvFrom("BYE ")
			toCaller, callerFrom := caller.recvFrom("BYE ")
			if callerFrom != called {
				t.Errorf("BYE to the caller came from %s, want the address it called, %s", callerFrom, called)
			}
			if via := header(toCaller, "Via")[0]; !strings.HasPrefix(via, "SIP/2.0/UDP "+called+";") {
				t.Errorf("BYE to the caller has Via %q, want it to name %s", via, called)
			}
			if nodeFrom != invFrom {
				t.Errorf("BYE to the node came from %s, want where its INVITE came from, %s", nodeFrom, invFrom)
			}
			if got, want := header(toNode, "Via")[0], header(inv, "Via")[0]; !strings.HasPrefix(got, strings.Split(want, ";")[0]+";") {
				t.Errorf("BYE to the node has Via %q, want the sent-by of its INVITE's, %q", got, want)
			}
			caller.send(called, answer(toCaller, 200, "OK", "", caller.addr()))
			node.send(nodeFrom, answer(toNode, 200, "OK", "", node.addr()))
		})
	}
}

// TestLeaveFrom_UnknownRefKeepsTheChoice: a dialog without recorded
// addresses (ref 0) leaves as prepareForward chose; refs round-trip.
func TestLeaveFrom_UnknownRefKeepsTheChoice(t *testing.T) {
	p := multiProxy()
	p.advHost, p.advPort = "127.0.0.1", 5060
	for _, a := range append([]listenAddr{p.firstAddr()}, p.extra[0].listenAddr, p.extra[1].listenAddr) {
		r := p.refOf(a)
		got, ok := p.addrOf(r)
		if r == 0 || !ok || got.host != a.host || got.port != a.port {
			t.Errorf("refOf(%s:%d) = %d, addrOf = %+v %v", a.host, a.port, r, got, ok)
		}
	}
	if r := p.refOf(listenAddr{host: "127.0.0.9", port: 5060}); r != 0 {
		t.Errorf("refOf(a foreign address) = %d, want 0", r)
	}
	in := multiInvite(t, "127.0.0.2:5070", "127.0.0.9:4000")
	out := forwardCopy(in)
	next := hop{addr: "127.0.0.9:4000", transport: "udp"}
	p.prepareForward(in, out, next, []byte("z9hG4bK-u"), nil)
	before := net.JoinHostPort(out.Via().Host, strconv.Itoa(out.Via().Port))
	p.leaveFrom(out, next, 0)
	if after := net.JoinHostPort(out.Via().Host, strconv.Itoa(out.Via().Port)); after != before {
		t.Errorf("ref 0 changed the Via from %s to %s", before, after)
	}
	p.leaveFrom(out, next, 1)
	if v := out.Via(); v.Host != "127.0.0.1" || v.Port != 5060 || out.Laddr.String() != "127.0.0.1:5060" {
		t.Errorf("ref 1: Via %s:%d, leaves from %s; want 127.0.0.1:5060", v.Host, v.Port, out.Laddr.String())
	}
}

// TestCancel_LeavesFromTheAddressOfTheInvite: the CANCEL sipedge relays
// to the node leaves from the socket its INVITE left from (the caller's
// address, not the first listen address) with the INVITE's Via.
func TestCancel_LeavesFromTheAddressOfTheInvite(t *testing.T) {
	node := newPeer(t)
	px, err := New(Options{Listen: "127.0.0.1:0", ListenExtra: []string{"127.0.0.2:0"},
		RouteSecret: "test-secret", UserAgent: "sipedge-test"},
		&fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}}, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	serve(t, px)
	second := px.ListenAddrs()[1]
	caller := newPeer(t)
	inv := invite(caller, "sip:conf1@"+second, "cancel-2", "z9hG4bK-cx2", 70)
	caller.send(second, inv)
	fwd, invFrom := node.recvFrom("INVITE ")
	if invFrom != second {
		t.Fatalf("INVITE to the node came from %s, want %s", invFrom, second)
	}
	node.send(second, answer(fwd, 180, "Ringing", "node5", node.addr()))
	caller.recv("SIP/2.0 180")
	caller.send(second, strings.Replace(strings.Replace(inv, "INVITE sip:", "CANCEL sip:", 1), "CSeq: 1 INVITE", "CSeq: 1 CANCEL", 1))
	c, from := node.recvFrom("CANCEL ")
	if from != second {
		t.Errorf("CANCEL came from %s, want the INVITE's address %s", from, second)
	}
	if v := header(c, "Via"); len(v) != 1 || v[0] != header(fwd, "Via")[0] {
		t.Errorf("CANCEL Via %q, want the forwarded INVITE's top Via %q", v, header(fwd, "Via")[0])
	}
	node.send(second, answer(c, 200, "OK", "", node.addr()))
	node.send(second, answer(fwd, 487, "Request Terminated", "node5", node.addr()))
	caller.recv("SIP/2.0 487")
}
