package app

import (
	"net/netip"
	"testing"
)

// BenchmarkTrustCheck is the proxy's trust check of a request's source (a
// media node, a trusted network, anyone else) against a 50-node ring.
func BenchmarkTrustCheck(b *testing.B) {
	addrs := map[string]string{}
	for i := range 50 {
		addrs["n"+netip.AddrFrom4([4]byte{127, 0, 1, byte(i)}).String()] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 1, byte(i)}), 5060).String()
	}
	src := &snapshots{}
	src.cur.Store(nodesSnapshot(addrs))
	check := newTrust(src, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}).check
	srcs := []netip.AddrPort{netip.MustParseAddrPort("127.0.1.7:5060"), netip.MustParseAddrPort("10.1.1.1:5060"),
		netip.MustParseAddrPort("192.0.2.1:5060")}
	i := 0
	for b.Loop() {
		check(srcs[i%len(srcs)])
		i++
	}
}
