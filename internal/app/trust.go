package app

import (
	"net/netip"
	"sync/atomic"

	"github.com/sipedge/sipedge/proxy"
	"github.com/sipedge/sipedge/ring"
)

// trustIndex maps media node addresses to names for one ring snapshot.
type trustIndex struct {
	snap   *ring.Snapshot
	byAddr map[netip.AddrPort]string
}

// newTrust builds the proxy's TrustFunc, the address half of trust: media
// nodes (requests from the exact address in their hash: an IP alone would
// trust every endpoint on a node's host) and the configured trusted
// networks. An address is no proof on UDP: the proxy also requires a valid
// X-Sipedge-Auth there (proxy/trust.go, internal/nodeauth).
func newTrust(w *ring.Watcher, networks []netip.Prefix) proxy.TrustFunc {
	var cur atomic.Pointer[trustIndex]
	index := func() *trustIndex {
		snap := w.Snapshot()
		if ti := cur.Load(); ti != nil && ti.snap == snap {
			return ti
		}
		ti := &trustIndex{snap: snap, byAddr: map[netip.AddrPort]string{}}
		if snap != nil {
			for _, st := range snap.Statuses() {
				ap, err := netip.ParseAddrPort(st.Node.Addr)
				if err != nil {
					continue // a node named by hostname is trusted by trusted_networks only
				}
				ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
				ti.byAddr[ap] = st.Node.Name
			}
		}
		cur.Store(ti)
		return ti
	}
	return func(src netip.AddrPort) (string, bool) {
		ti := index()
		if name, ok := ti.byAddr[src]; ok {
			return name, true
		}
		for _, p := range networks {
			if p.Contains(src.Addr()) {
				return "", true
			}
		}
		return "", false
	}
}
