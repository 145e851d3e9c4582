package app

import (
	"net/netip"
	"sync/atomic"

	"github.com/sipedge/sipedge/ring"
)

// trustIndex maps media node addresses to names for one ring snapshot.
type trustIndex struct {
	snap   *ring.Snapshot
	byAddr map[netip.AddrPort]string
}

// trust is the address half of trust, the proxy's TrustFunc (check):
// media nodes (requests from the exact address in their hash: an IP alone
// would trust every endpoint on a node's host) and the configured trusted
// networks, which a SIGHUP replaces. An address is no proof on UDP: the
// proxy also requires a valid X-Sipedge-Auth there (proxy/trust.go,
// internal/nodeauth).
type trust struct {
	nodes    ring.SnapshotSource
	networks atomic.Pointer[[]netip.Prefix]
	cur      atomic.Pointer[trustIndex]
}

func newTrust(nodes ring.SnapshotSource, networks []netip.Prefix) *trust {
	t := &trust{nodes: nodes}
	t.setNetworks(networks)
	return t
}

// setNetworks replaces the trusted networks.
func (t *trust) setNetworks(n []netip.Prefix) { t.networks.Store(&n) }

// index is the address index of the current snapshot, rebuilt when the
// snapshot changed.
func (t *trust) index() *trustIndex {
	snap := t.nodes.Snapshot()
	if ti := t.cur.Load(); ti != nil && ti.snap == snap {
		return ti
	}
	ti := &trustIndex{snap: snap, byAddr: map[netip.AddrPort]string{}}
	for _, st := range snap.Statuses() {
		ap, err := netip.ParseAddrPort(st.Node.Addr)
		if err != nil {
			continue // a node named by hostname is trusted by trusted_networks only
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		ti.byAddr[ap] = st.Node.Name
	}
	t.cur.Store(ti)
	return ti
}

// check says whether src may set the X-Sipedge-* headers, and which media
// node it is ("" for a trusted network).
func (t *trust) check(src netip.AddrPort) (string, bool) {
	if name, ok := t.index().byAddr[src]; ok {
		return name, true
	}
	for _, p := range *t.networks.Load() {
		if p.Contains(src.Addr()) {
			return "", true
		}
	}
	return "", false
}
