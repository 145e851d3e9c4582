package integration

import (
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// udpLink is a UDP caller on local that talks to one sipedge address and
// checks that every answer comes from the address it sent to.
func udpLink(t *testing.T, local, remote string) sipLink {
	t.Helper()
	c, err := net.ListenPacket("udp", local)
	if err != nil {
		t.Fatalf("caller socket %s: %v", local, err)
	}
	t.Cleanup(func() { c.Close() })
	ra, err := net.ResolveUDPAddr("udp", remote)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	return sipLink{addr: c.LocalAddr().String(), tp: "UDP",
		send: func(m string) error { _, err := c.WriteTo([]byte(m), ra); return err },
		recv: func() (string, error) {
			for {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return "", err
				}
				if from.String() != ra.String() {
					t.Errorf("answer from %s, want the address called, %s", from, ra)
				}
				return string(buf[:n]), nil
			}
		}}
}

func recordRouteLines(msg string) []string {
	var rr []string
	for _, line := range strings.Split(msg, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "record-route") {
			for _, e := range strings.Split(v, ",") {
				rr = append(rr, strings.TrimSpace(e))
			}
		}
	}
	return rr
}

// Issue 10 item 5: one sipedge listening on 127.0.0.1:P, [::1]:P and
// 127.0.0.2:P. A call through each address completes (INVITE, ACK, and
// an in-dialog BYE routed by the Record-Route); answers leave from the
// socket called; Record-Route names the address used (RFC 3261 §16.6),
// twice when the node (IPv4) is reached from another address than the
// caller (IPv6) used.
func TestListen_CallsThroughEachOfSeveralAddresses(t *testing.T) {
	if l, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Fatalf("no IPv6 loopback on this machine: %v", err)
	} else {
		l.Close()
	}
	e := newEnv(t)
	node := e.startNode("n1")
	port := strconv.Itoa(freePort(t))
	v4, v6, v4b := "127.0.0.1:"+port, "[::1]:"+port, "127.0.0.2:"+port
	s := e.startSipedge("L", "--listen", v4+","+v6+","+v4b, "--advertise", v4)
	s.waitRing(t, 5*time.Second, "n1")

	cases := []struct {
		name, local, remote string
		rr                  []string // Record-Route host:port, top first
	}{
		{"IPv4 first address", "127.0.0.1:0", v4, []string{v4}},
		{"IPv6 address: double Record-Route", "[::1]:0", v6, []string{v4, v6}},
		{"second IPv4 address", "127.0.0.1:0", v4b, []string{v4b}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(node.received(t, "BYE"))
			ok := udpLink(t, tc.local, tc.remote).call(t, tc.remote, "multi"+svcTag())
			rr := recordRouteLines(ok)
			if len(rr) != len(tc.rr) {
				t.Fatalf("Record-Route %q, want %d naming %q", rr, len(tc.rr), tc.rr)
			}
			for i, want := range tc.rr {
				if !strings.HasPrefix(rr[i], "<sip:"+want+";transport=udp;lr;") {
					t.Errorf("Record-Route %d is %s, want it to name %s", i, rr[i], want)
				}
			}
			eventually(t, 3*time.Second, "node got the BYE", func() string {
				if n := len(node.received(t, "BYE")); n <= before {
					return "BYEs " + strconv.Itoa(n)
				}
				return ""
			})
		})
	}
	for _, m := range []string{"INVITE", "ACK", "BYE"} {
		if n := len(node.received(t, m)); n != len(cases) {
			t.Errorf("node got %d %s, want %d", n, m, len(cases))
		}
	}
	// The node is reached from the address the caller used, or from the
	// first one of its family: its INVITEs' Vias name 127.0.0.1 twice and
	// 127.0.0.2 once.
	vias := map[string]int{}
	for _, m := range node.received(t, "INVITE") {
		sentBy, _, _ := strings.Cut(strings.Fields(m.Header("via"))[1], ";")
		vias[sentBy]++
	}
	if vias[v4] != 2 || vias[v4b] != 1 {
		t.Errorf("node's INVITE Vias %v, want %s twice and %s once", vias, v4, v4b)
	}
}

// A second listen address that is a wildcard is refused at start-up, and
// the error names the field and the entry.
func TestListen_BadExtraAddressNamed(t *testing.T) {
	b, err := exec.Command(binary(t, "sipedge"), "--listen", "127.0.0.1:0,0.0.0.0:5999", "--redis", "127.0.0.1:1").CombinedOutput()
	out := string(b)
	if err == nil || !strings.Contains(out, `"listen"`) || !strings.Contains(out, "0.0.0.0:5999") {
		t.Fatalf("exit %v, output %s: want a failure naming listen and 0.0.0.0:5999", err, out)
	}
}

// The node's own in-dialog request reaches a caller on the other family:
// a caller on [::1] calls through sipedge's [::1] address to a confnode on
// 127.0.0.1; when the node hangs up (SIGTERM: BYE on every call) its BYE
// comes to sipedge's IPv4 address (the top Record-Route) and leaves to the
// caller from the IPv6 socket, with a Via naming it; the caller's 200
// gets back to the node.
func TestListen_NodeByeReachesACallerOfTheOtherFamily(t *testing.T) {
	e := newEnv(t)
	port := strconv.Itoa(freePort(t))
	v4, v6 := "127.0.0.1:"+port, "[::1]:"+port
	node := startProc(t, "confnode-b1", binary(t, "confnode"), "--name", "b1", "--listen", loopback(freePort(t)),
		"--redis", e.redisAddr, "--log-format", "json", "--heartbeat-interval", "300ms", "--rtp=false")
	s := e.startSipedge("B", "--listen", v4+","+v6, "--advertise", v4)
	s.waitRing(t, 5*time.Second, "b1")

	link := udpLink(t, "[::1]:0", v6)
	callID := "bye6-" + svcTag()
	inv := "INVITE sip:bye6@" + v6 + " SIP/2.0\r\nVia: SIP/2.0/UDP " + link.addr + ";branch=z9hG4bKb6" + svcTag() + ";rport\r\n" +
		"From: <sip:alice@example.com>;tag=a6\r\nTo: <sip:bye6@example.com>\r\nCall-ID: " + callID + "\r\nCSeq: 1 INVITE\r\n" +
		"Contact: <sip:alice@" + link.addr + ">\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if err := link.send(inv); err != nil {
		t.Fatal(err)
	}
	ok := link.waitFinal(t, "INVITE")
	if !strings.HasPrefix(ok, "SIP/2.0 200") {
		t.Fatalf("INVITE over [::1]: %s", ok)
	}
	res, err := parseSIPResponse([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	rr := recordRouteLines(ok)
	routes := ""
	for i := len(rr) - 1; i >= 0; i-- {
		routes += "Route: " + rr[i] + "\r\n"
	}
	contact := strings.Trim(strings.Split(res.Header("contact"), ";")[0], "<>")
	ack := "ACK " + contact + " SIP/2.0\r\nVia: SIP/2.0/UDP " + link.addr + ";branch=z9hG4bKa6" + svcTag() + ";rport\r\n" +
		routes + "From: <sip:alice@example.com>;tag=a6\r\nTo: " + res.Header("to") + "\r\nCall-ID: " + callID + "\r\n" +
		"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if err := link.send(ack); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "node confirmed the call", func() string {
		if !strings.Contains(node.log(), `"call confirmed"`) {
			return "no call confirmed"
		}
		return ""
	})

	go node.stop(5 * time.Second)
	var bye string
	for bye == "" {
		m, err := link.recv() // udpLink checks it comes from [::1]:P
		if err != nil {
			t.Fatalf("waiting for the node's BYE: %v", err)
		}
		if strings.HasPrefix(m, "BYE ") {
			bye = m
		}
	}
	var via []string
	var hdrs string
	for _, line := range strings.Split(bye, "\r\n") {
		k, _, _ := strings.Cut(line, ":")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "via", "v":
			via = append(via, line)
			hdrs += line + "\r\n"
		case "from", "f", "to", "t", "call-id", "i", "cseq":
			hdrs += line + "\r\n"
		}
	}
	if len(via) == 0 || !strings.Contains(via[0], "UDP "+v6+";") {
		t.Errorf("BYE's top Via %q, want sipedge's %s", via, v6)
	}
	if err := link.send("SIP/2.0 200 OK\r\n" + hdrs + "Content-Length: 0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "node ended the call by its BYE", func() string {
		log := node.log()
		if strings.Contains(log, "BYE at shutdown failed") {
			t.Fatalf("the node's BYE got no answer:\n%s", log)
		}
		if !strings.Contains(log, `"reason":"shutdown"`) {
			return "no call ended"
		}
		return ""
	})
}
