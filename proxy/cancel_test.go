package proxy

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sipedge/sipedge/ring"
)

// CANCEL from the caller is answered by sipedge, forwarded to the node once
// the node has answered provisionally, and the node's 487 ends the call.
func TestProxy_CancelForwardedToNode(t *testing.T) {
	node := newPeer(t)
	px := startProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}})
	caller := newPeer(t)
	inv := invite(caller, "sip:conf1@"+px.Addr(), "cancel-1", "z9hG4bK-cx1", 70)
	caller.send(px.Addr(), inv)
	fwd := node.recv("INVITE ")
	node.send(px.Addr(), answer(fwd, 180, "Ringing", "node5", node.addr()))
	caller.recv("SIP/2.0 180")

	cancel := strings.Replace(strings.Replace(inv, "INVITE sip:", "CANCEL sip:", 1), "CSeq: 1 INVITE", "CSeq: 1 CANCEL", 1)
	caller.send(px.Addr(), cancel)
	caller.recv("SIP/2.0 200") // 200 to the CANCEL
	c := node.recv("CANCEL ")
	if v := header(c, "Via"); len(v) != 1 || v[0] != header(fwd, "Via")[0] {
		t.Errorf("CANCEL Via %q, want the forwarded INVITE's top Via %q", v, header(fwd, "Via")[0])
	}
	node.send(px.Addr(), answer(c, 200, "OK", "", node.addr()))
	node.send(px.Addr(), answer(fwd, 487, "Request Terminated", "node5", node.addr()))
	caller.recv("SIP/2.0 487")
	// sipedge ACKs the node's 487 itself (hop-by-hop, non-2xx).
	if ack := node.recv("ACK "); !strings.Contains(ack, "CSeq: 1 ACK") {
		t.Errorf("ACK for 487 wrong:\n%s", ack)
	}
}

// A node's error answer is relayed and ACKed hop by hop; the caller's ACK
// for it is absorbed by sipedge's server transaction.
func TestProxy_ErrorAnswerRelayedAndAcked(t *testing.T) {
	node := newPeer(t)
	px := startProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}})
	caller := newPeer(t)
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "busy-1", "z9hG4bK-b1", 70))
	fwd := node.recv("INVITE ")
	node.send(px.Addr(), answer(fwd, 486, "Busy Here", "node6", node.addr()))
	res := caller.recv("SIP/2.0 486")
	node.recv("ACK ")
	caller.send(px.Addr(), fmt.Sprintf(`ACK sip:conf1@%s SIP/2.0
Via: SIP/2.0/UDP %s;branch=z9hG4bK-b1;rport
Max-Forwards: 70
From: <sip:alice@example.com>;tag=caller1
To: %s
Call-ID: busy-1
CSeq: 1 ACK
Content-Length: 0

`, px.Addr(), caller.addr(), header(res, "To")[0]))
	if extra := node.drain(); len(extra) != 0 {
		t.Errorf("caller's ACK for 486 leaked to the node: %q", extra)
	}
}

// A caller on TCP gets its answers back on its TCP connection while the
// node is reached over UDP (double Record-Route, one per transport).
func TestProxy_TCPCallerUDPNode(t *testing.T) {
	node := newPeer(t)
	px := startProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr(), Transport: "udp"}})
	conn, err := net.Dial("tcp", px.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	body := fmt.Sprintf("INVITE sip:conf1@%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK-t1\r\nMax-Forwards: 70\r\n"+
		"From: <sip:alice@example.com>;tag=tcp1\r\nTo: <sip:conf1@example.com>\r\nCall-ID: tcp-1\r\nCSeq: 1 INVITE\r\n"+
		"Contact: <sip:alice@%s;transport=tcp>\r\nContent-Length: 0\r\n\r\n", px.Addr(), local, local)
	if _, err := conn.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	fwd := node.recv("INVITE ")
	rr := header(fwd, "Record-Route")
	if len(rr) != 2 || !strings.Contains(rr[0], "transport=udp") || !strings.Contains(rr[1], "transport=tcp") {
		t.Fatalf("Record-Route = %q, want node-facing udp over caller-facing tcp", rr)
	}
	node.send(px.Addr(), answer(fwd, 200, "OK", "node7", node.addr()))
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("no 200 on the caller's TCP connection: %v", err)
		}
		if strings.HasPrefix(line, "SIP/2.0 200") {
			return
		}
	}
}

// RFC 3261 §16.7: a stateful proxy answers 100 Trying itself and never
// forwards the next hop's; other provisional responses are relayed.
func TestProxy_NodeTryingNotRelayed(t *testing.T) {
	node := newPeer(t)
	a := startProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr(), Transport: "udp"}})
	caller := newPeer(t)

	caller.send(a.Addr(), invite(caller, "sip:conf1@"+a.Addr(), "call-trying", "z9hG4bK-t1", 70))
	caller.recv("SIP/2.0 100") // sipedge's own
	inv := node.recv("INVITE ")
	node.send(a.Addr(), answer(inv, 100, "Trying", "", node.addr()))
	for _, m := range caller.drain() {
		if strings.HasPrefix(m, "SIP/2.0 100") {
			t.Errorf("the node's 100 Trying was relayed upstream:\n%s", m)
		}
	}
	node.send(a.Addr(), answer(inv, 180, "Ringing", "node1", node.addr()))
	caller.recv("SIP/2.0 180")
}
