package media

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/sipedge/sipedge/media/relay"
)

// withDualStackPool gives the instance a relay bound to "::" advertising
// 127.0.0.1 and ::1 (skipped without an IPv6 loopback).
func withDualStackPool(tb testing.TB) option {
	tb.Helper()
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		tb.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	min := 40000 + 2*rand.IntN(9000)
	p, err := relay.NewPool(netip.IPv6Unspecified(), min, min+63,
		relay.WithAdvertise(netip.MustParseAddr("127.0.0.1")), relay.WithAdvertise(netip.IPv6Loopback()))
	if err != nil {
		tb.Fatal(err)
	}
	return func(s *setup) { s.Pool = p }
}

func audioSDP6(at netip.AddrPort) []byte {
	return fmt.Appendf(nil, "v=0\r\no=- 1 1 IN IP6 %s\r\ns=-\r\nc=IN IP6 %s\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", at.Addr(), at.Addr(), at.Port())
}

// With a dual-stack relay, each side's SDP names the relay in the family
// that side speaks: the offer toward the node from the proxy's hint (the
// node's SIP address), the answer toward the caller from the caller's own
// offer; without a hint, the sender's family.
func TestDualStack_SDPNamesEachSidesFamily(t *testing.T) {
	e := newEnv(t)
	in := e.instance("sipedge-1", withDualStackPool(t))
	caller6 := netip.MustParseAddrPort("[::1]:4000")
	node4 := netip.MustParseAddrPort("127.0.0.1:5000")
	tests := []struct {
		name            string
		hint            bool // the proxy says: caller IPv6, callee IPv4
		callerSDP       []byte
		wantTowardNode  bool // true: IPv6
		nodeSDP         []byte
		wantTowardCalle bool
	}{
		{"IPv6 caller, IPv4 node, hinted", true, audioSDP6(caller6), false, audioSDP(node4, 1), true},
		{"IPv6 caller, IPv4 node, no hint", false, audioSDP6(caller6), true, audioSDP(node4, 1), true},
		{"IPv4 both", false, audioSDP(node4, 1), false, audioSDP(node4, 1), false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("dual-%d", i)
			in.mg.Open(id, "conf-dual", true)
			if tc.hint {
				in.mg.Families(id, true, false)
			}
			offer, err := in.mg.SDP(id, true, tc.callerSDP)
			if err != nil {
				t.Fatal(err)
			}
			if got := relayRTP(t, offer, 0).Addr(); got.Is6() != tc.wantTowardNode {
				t.Errorf("offer toward the node names %v, want IPv6 %v\n%s", got, tc.wantTowardNode, offer)
			}
			answer, err := in.mg.SDP(id, false, tc.nodeSDP)
			if err != nil {
				t.Fatal(err)
			}
			if got := relayRTP(t, answer, 0).Addr(); got.Is6() != tc.wantTowardCalle {
				t.Errorf("answer toward the caller names %v, want IPv6 %v\n%s", got, tc.wantTowardCalle, answer)
			}
			in.mg.Ended(id)
		})
	}
}
