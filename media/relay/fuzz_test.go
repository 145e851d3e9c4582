package relay

import (
	"net/netip"
	"testing"
)

// FuzzHandle feeds arbitrary datagrams to the per-packet path of both
// socket kinds, with and without rtcp-mux: it must never panic, and a packet
// it accepts must be counted.
func FuzzHandle(f *testing.F) {
	f.Add(rtpPkt(f, 0xa, 1, 20), false)
	f.Add(rtcpPkt(0xa), true)
	f.Add([]byte{0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0, 0, 1, 0x22, 0}, false) // two-byte extension overrun
	f.Add([]byte{0x8f, 96}, false)
	h := newHarness(f, Config{})
	h.s.SetPeerB(netip.AddrPortFrom(netip.IPv4Unspecified(), 9), netip.AddrPort{}, false) // hold: send nothing
	src := netip.AddrPortFrom(loopback, 9)
	f.Fuzz(func(t *testing.T, pkt []byte, mux bool) {
		h.s.SetPeerA(src, netip.AddrPort{}, mux)
		for _, ch := range []channel{chRTP, chRTCP} {
			r := newReader(h.s, &h.s.legs[SideA], &h.s.legs[SideB], ch)
			before := h.dropped(dropInvalid) + h.dropped(dropNoPeer)
			r.handle(pkt, src)
			if after := h.dropped(dropInvalid) + h.dropped(dropNoPeer); after != before+1 {
				t.Fatalf("packet %x on channel %d neither dropped as invalid nor counted", pkt, ch)
			}
		}
	})
}
