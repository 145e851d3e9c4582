package ring

import (
	"cmp"
	"slices"
	"time"
)

// Reasons a node is left out of the ring, as NodeStatus.Reason shows them.
const (
	ReasonHeartbeatStale = "heartbeat stale"
	ReasonProbeDown      = "probe down"
	ReasonZeroWeight     = "weight 0"
)

// NodeStatus is one known node with the verdict on it.
type NodeStatus struct {
	Node     Node
	Healthy  bool   // alive: heartbeat and probes agree
	Eligible bool   // in the ring: may take new conferences
	Reason   string // why not healthy or not eligible; "" when eligible
}

// Snapshot is the node state at one moment: every valid node, its status,
// and the ring of eligible nodes. It is immutable; readers share it freely.
// A nil *Snapshot behaves as an empty one.
type Snapshot struct {
	ring     *Ring
	version  uint64
	statuses []NodeStatus   // sorted by name
	byName   map[string]int // index into statuses
	readAt   time.Time
}

// judge is the one place that decides whether a node is healthy and whether
// it may take new conferences. Rules still to come (maintenance, capable,
// deservice by profile, slow-start weight) belong here, nowhere else.
func judge(n Node, probeUp bool, now time.Time, o HealthOptions) NodeStatus {
	st := NodeStatus{Node: n}
	switch {
	// A node that never writes a heartbeat is judged by probes alone.
	case !n.Heartbeat.IsZero() && now.Sub(n.Heartbeat) > o.HeartbeatTimeout:
		st.Reason = ReasonHeartbeatStale
	case o.ProbeInterval > 0 && !probeUp:
		st.Reason = ReasonProbeDown
	case n.Weight <= 0:
		st.Healthy, st.Reason = true, ReasonZeroWeight
	default:
		st.Healthy, st.Eligible = true, true
	}
	return st
}

// BuildSnapshot judges every node at now and builds the ring of eligible
// ones. probeUp says whether OPTIONS probes consider a node up (nil: all
// up); it is only consulted when opts enable probing. The result has
// version 1; the watcher numbers its own snapshots.
func BuildSnapshot(nodes []Node, probeUp func(name string) bool, now time.Time, opts HealthOptions) *Snapshot {
	return build(nil, nodes, probeUp, now, opts)
}

// build is BuildSnapshot relative to prev: when the eligible members and
// weights are the same, prev's ring and version are kept, so Version only
// moves when placement can actually change.
func build(prev *Snapshot, nodes []Node, probeUp func(string) bool, now time.Time, opts HealthOptions) *Snapshot {
	opts = opts.withDefaults()
	sorted := slices.Clone(nodes)
	slices.SortStableFunc(sorted, func(a, b Node) int { return cmp.Compare(a.Name, b.Name) })
	sorted = slices.CompactFunc(sorted, func(a, b Node) bool { return a.Name == b.Name })

	s := &Snapshot{statuses: make([]NodeStatus, len(sorted)), byName: make(map[string]int, len(sorted)), readAt: now}
	var members []Member
	for i, n := range sorted {
		st := judge(n, probeUp == nil || probeUp(n.Name), now, opts)
		s.statuses[i], s.byName[n.Name] = st, i
		if st.Eligible {
			members = append(members, Member{Name: n.Name, Weight: n.Weight})
		}
	}
	s.ring = New(members)
	switch {
	case prev == nil:
		s.version = 1
	case prev.ring.sameMembers(s.ring):
		s.ring, s.version = prev.ring, prev.version
	default:
		s.version = prev.version + 1
	}
	return s
}

// Lookup returns the eligible node key maps to. It does not allocate.
func (s *Snapshot) Lookup(key string) (Node, bool) {
	if s == nil {
		return Node{}, false
	}
	name, ok := s.ring.Lookup(key)
	if !ok {
		return Node{}, false
	}
	return s.statuses[s.byName[name]].Node, true
}

// Node returns any valid known node, eligible or not.
func (s *Snapshot) Node(name string) (Node, bool) {
	if s == nil {
		return Node{}, false
	}
	i, ok := s.byName[name]
	if !ok {
		return Node{}, false
	}
	return s.statuses[i].Node, true
}

// Eligible reports whether the node is in the ring.
func (s *Snapshot) Eligible(name string) bool {
	if s == nil {
		return false
	}
	i, ok := s.byName[name]
	return ok && s.statuses[i].Eligible
}

// Statuses returns every known valid node with its verdict, sorted by name.
// The slice is a copy the caller may keep or change.
func (s *Snapshot) Statuses() []NodeStatus {
	if s == nil {
		return nil
	}
	return slices.Clone(s.statuses)
}

// Ring is the ring of eligible nodes.
func (s *Snapshot) Ring() *Ring {
	if s == nil {
		return nil
	}
	return s.ring
}

// Version increases whenever the ring's members or weights change, and only
// then, so consumers can cheaply tell whether placement may have moved.
func (s *Snapshot) Version() uint64 {
	if s == nil {
		return 0
	}
	return s.version
}

// ReadAt is when the node data was read from Redis (for BuildSnapshot, its
// now). Heartbeats are judged at this time; during a Redis outage it stops
// moving, which is how staleness of the whole snapshot shows.
func (s *Snapshot) ReadAt() time.Time {
	if s == nil {
		return time.Time{}
	}
	return s.readAt
}
