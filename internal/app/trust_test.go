package app

import (
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/sipedge/sipedge/ring"
)

type snapshots struct{ cur atomic.Pointer[ring.Snapshot] }

func (s *snapshots) Snapshot() *ring.Snapshot { return s.cur.Load() }

func nodesSnapshot(addrs map[string]string) *ring.Snapshot {
	var nodes []ring.Node
	for name, addr := range addrs {
		nodes = append(nodes, ring.Node{Name: name, Addr: addr, Transport: "udp", Weight: 1, Capable: true})
	}
	return ring.BuildSnapshotFrom(ring.Inputs{Nodes: nodes})
}

func TestTrust(t *testing.T) {
	src := &snapshots{}
	tr := newTrust(src, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	check := func(t *testing.T, addr, wantNode string, wantTrusted bool) {
		t.Helper()
		node, ok := tr.check(netip.MustParseAddrPort(addr))
		if node != wantNode || ok != wantTrusted {
			t.Errorf("check(%s) = %q, %v; want %q, %v", addr, node, ok, wantNode, wantTrusted)
		}
	}
	t.Run("no snapshot yet: trusted networks only", func(t *testing.T) {
		check(t, "127.0.0.1:5070", "", false)
		check(t, "10.1.2.3:5060", "", true)
	})
	src.cur.Store(nodesSnapshot(map[string]string{"n1": "127.0.0.1:5070", "n2": "[::ffff:127.0.0.2]:5070", "n3": "media.example:5060"}))
	for _, tc := range []struct {
		name, addr, node string
		trusted          bool
	}{
		{"a node's exact address", "127.0.0.1:5070", "n1", true},
		{"an IPv4-mapped node address, unmapped", "127.0.0.2:5070", "n2", true},
		{"a node's host on another port", "127.0.0.1:5071", "", false},
		{"a trusted network", "10.9.9.9:5060", "", true},
		{"anyone else", "192.0.2.1:5060", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) { check(t, tc.addr, tc.node, tc.trusted) })
	}
	t.Run("a new snapshot is seen", func(t *testing.T) {
		src.cur.Store(nodesSnapshot(map[string]string{"n4": "127.0.0.4:5070"}))
		check(t, "127.0.0.1:5070", "", false)
		check(t, "127.0.0.4:5070", "n4", true)
	})
	t.Run("SIGHUP replaces the trusted networks", func(t *testing.T) {
		tr.setNetworks([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")})
		check(t, "10.9.9.9:5060", "", false)
		check(t, "192.0.2.1:5060", "", true)
		check(t, "127.0.0.4:5070", "n4", true)
	})
}
