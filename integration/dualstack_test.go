package integration

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// sipedge listening on 127.0.0.1 and [::1] binds its relay dual-stack: an
// IPv6 caller is anchored to an IPv4 confnode. The caller's answer names
// the relay at ::1, the node's offer names it at 127.0.0.1 (an IPv4-only
// node could not send to ::1), and RTP crosses both ways: the node's
// reaches the caller, the caller's is counted at the node.
func TestRelay_IPv6CallerIPv4NodeThroughDualStackRelay(t *testing.T) {
	if l, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Fatalf("no IPv6 loopback on this machine: %v", err)
	} else {
		l.Close()
	}
	e := newEnv(t)
	e.writeSettings("media_timeout", "60", "guests_only_timeout", "3600")
	port := strconv.Itoa(freePort(t))
	v4, v6 := "127.0.0.1:"+port, "[::1]:"+port
	se := e.startSipedge("D", "--listen", v4+","+v6, "--advertise", v4, "--media-ports", mediaPorts(t))
	node, _ := e.startConfnode("cn1", "--proxy", v4)
	se.waitRing(t, 5*time.Second, "cn1")
	m := &mediaEnv{env: e, se: se, node: node}

	u := newRTPUAOn(t, "six", netip.IPv6Loopback())
	if err := u.dial(v6, "dual-stack"); err != nil {
		t.Fatal(err)
	}
	u.mu.Lock()
	relayAt := u.media
	u.mu.Unlock()
	if relayAt.Addr() != netip.IPv6Loopback() {
		t.Fatalf("the answer names the relay at %v, want ::1", relayAt)
	}
	eventually(t, 5*time.Second, "the node's RTP reaches the IPv6 caller", func() string {
		if got := u.received.Load(); got < 10 {
			return fmt.Sprintf("%d packets received", got)
		}
		return ""
	})
	if err := u.hangup(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the node logged the call's end", func() string {
		if m.nodeEnded(u.callID) == nil {
			return "not yet"
		}
		return ""
	})
	if rcv, _ := m.nodeEnded(u.callID)["rtp_received"].(float64); rcv < 10 {
		t.Errorf("the node received %v RTP packets from the IPv6 caller, want at least 10", rcv)
	}
}
