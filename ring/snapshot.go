package ring

import (
	"cmp"
	"slices"
	"time"
)

// Reasons a node is not plainly in the ring, as NodeStatus.Reason shows
// them (besides the out-of-service reasons of OutReason).
const (
	ReasonHeartbeatStale = "heartbeat stale"
	ReasonProbeDown      = "probe down"
	ReasonZeroWeight     = "weight 0"
	ReasonKeptActive     = "kept active: last nodes of site"
	ReasonSuspect        = "suspect: failed a call"
)

// NodeStatus is one known node with the verdict on it.
type NodeStatus struct {
	Node     Node
	Healthy  bool   // alive: heartbeat and probes agree; sticky conferences stay while true
	Eligible bool   // in the ring: may take new conferences
	Reason   string // why not healthy, not eligible, or kept active; "" when plainly in the ring

	InService       bool    // not deserviced, not in maintenance, capable (health aside)
	OutReason       string  // why out of service; "" when in service
	State           string  // StateNormal, StateDraining or StateMaintenance
	Calls           int     // active dialogs through sipedge on the node (node_calls)
	ReportedLoad    float64 // 1 while draining or in maintenance, else the node's load
	EffectiveWeight float64 // its weight in the ring (slow start applied); 0 when not in it
	KeptActive      bool    // out of service but eligible: no other node of its site can serve
	DrainExpired    bool    // draining longer than the drain timeout: its calls are due a BYE
}

// Inputs is everything BuildSnapshotFrom judges.
type Inputs struct {
	Nodes   []Node
	ProbeUp func(name string) bool // nil: all up; consulted only when Health enables probing
	Suspect func(name string) bool // nil: none; a node that just failed a call (see Watcher.MarkSuspect)
	Now     time.Time
	Health  HealthOptions
	Policy  Policy
	Calls   map[string]int // node name -> active dialogs; absent = 0
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

// judge decides one node on its own: health, service state, slow-start
// weight. The rule that needs the other nodes (last ones of a site stay)
// and the ring are applied by build; no other code decides these.
func judge(n Node, probeUp, suspect bool, calls int, in *Inputs) NodeStatus {
	st := NodeStatus{Node: n, Calls: calls, OutReason: outReason(n, in.Policy), State: StateNormal, ReportedLoad: n.Load}
	st.InService = st.OutReason == ""
	if !st.InService {
		st.State, st.ReportedLoad = StateMaintenance, 1
		if calls > 0 {
			st.State = StateDraining
		}
		st.DrainExpired = drainExpired(n, calls, in.Policy.DrainTimeout, in.Now)
	}
	switch {
	// A node that never writes a heartbeat is judged by probes alone.
	case !n.Heartbeat.IsZero() && in.Now.Sub(n.Heartbeat) > in.Health.HeartbeatTimeout:
		st.Reason = ReasonHeartbeatStale
	case in.Health.ProbeInterval > 0 && !probeUp:
		st.Reason = ReasonProbeDown
	case suspect:
		// Neither new conferences nor sticky ones: the node failed a call
		// moments ago. It comes back at its next good probe or hold end.
		st.Reason = ReasonSuspect
	case !st.InService:
		st.Healthy, st.Reason = true, st.OutReason
	case n.Weight <= 0:
		st.Healthy, st.Reason = true, ReasonZeroWeight
	default:
		st.Healthy, st.Eligible = true, true
		st.EffectiveWeight = rampWeight(n, in.Now, in.Policy.SlowStart)
	}
	return st
}

// BuildSnapshot judges every node at now, with no deservice profiles, no
// slow start and no calls known, and builds the ring of eligible ones.
// probeUp says whether OPTIONS probes consider a node up (nil: all up); it
// is only consulted when opts enable probing. The result has version 1.
func BuildSnapshot(nodes []Node, probeUp func(name string) bool, now time.Time, opts HealthOptions) *Snapshot {
	return BuildSnapshotFrom(Inputs{Nodes: nodes, ProbeUp: probeUp, Now: now, Health: opts})
}

// BuildSnapshotFrom judges every node with everything that bears on it and
// builds the ring of eligible ones. The result has version 1; the watcher
// numbers its own snapshots.
func BuildSnapshotFrom(in Inputs) *Snapshot { return build(nil, in) }

// build is BuildSnapshotFrom relative to prev: when the eligible members
// and their effective weights are the same, prev's ring and version are
// kept, so Version only moves when placement can actually change.
func build(prev *Snapshot, in Inputs) *Snapshot {
	in.Health = in.Health.withDefaults()
	sorted := slices.Clone(in.Nodes)
	slices.SortStableFunc(sorted, func(a, b Node) int { return cmp.Compare(a.Name, b.Name) })
	sorted = slices.CompactFunc(sorted, func(a, b Node) bool { return a.Name == b.Name })

	s := &Snapshot{statuses: make([]NodeStatus, len(sorted)), byName: make(map[string]int, len(sorted)), readAt: in.Now}
	serving := map[string]bool{} // sites with a node that can take new conferences
	suspects := false
	for i, n := range sorted {
		sus := in.Suspect != nil && in.Suspect(n.Name)
		st := judge(n, in.ProbeUp == nil || in.ProbeUp(n.Name), sus, in.Calls[n.Name], &in)
		s.statuses[i], s.byName[n.Name] = st, i
		suspects = suspects || st.Reason == ReasonSuspect
	}
	if suspects && !slices.ContainsFunc(s.statuses, func(st NodeStatus) bool { return st.Eligible }) {
		// Suspicion never empties the ring: one caller whose INVITEs every
		// node refuses must not take them all out. Judged as if not suspect.
		for i := range s.statuses {
			if st := &s.statuses[i]; st.Reason == ReasonSuspect {
				*st = judge(st.Node, true, false, st.Calls, &in)
			}
		}
	}
	for _, st := range s.statuses {
		if st.EffectiveWeight > 0 {
			serving[st.Node.Site] = true
		}
	}
	// Last ones stay: out-of-service nodes serve rather than nobody of
	// their site. They keep their state, but take calls at full weight,
	// and their drain does not expire while they do.
	for i := range s.statuses {
		st := &s.statuses[i]
		if st.Healthy && !st.InService && st.Node.Weight > 0 && !serving[st.Node.Site] {
			st.Eligible, st.KeptActive, st.DrainExpired = true, true, false
			st.EffectiveWeight, st.Reason = st.Node.Weight, ReasonKeptActive
		}
	}
	if !slices.ContainsFunc(s.statuses, func(st NodeStatus) bool { return st.EffectiveWeight > 0 }) {
		// Nodes at the very start of their ramp take nothing while another
		// node can; when none can, they take it all rather than leave a gap.
		for i := range s.statuses {
			if st := &s.statuses[i]; st.Eligible && st.EffectiveWeight == 0 {
				st.EffectiveWeight = st.Node.Weight
			}
		}
	}
	members := make([]Member, 0, len(s.statuses))
	for _, st := range s.statuses {
		if st.Eligible {
			members = append(members, Member{Name: st.Node.Name, Weight: st.EffectiveWeight})
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

// LookupExcluding returns the eligible node key maps to once the nodes
// named in exclude are taken out: where a request goes after the nodes it
// was tried on failed. It does not allocate.
func (s *Snapshot) LookupExcluding(key string, exclude []string) (Node, bool) {
	if s == nil {
		return Node{}, false
	}
	name, ok := s.ring.LookupExcluding(key, exclude)
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

// Healthy reports whether the node is alive, whatever its service state:
// a conference already on it stays there while this holds.
func (s *Snapshot) Healthy(name string) bool {
	st, ok := s.Status(name)
	return ok && st.Healthy
}

// Status returns the verdict on one valid known node.
func (s *Snapshot) Status(name string) (NodeStatus, bool) {
	if s == nil {
		return NodeStatus{}, false
	}
	i, ok := s.byName[name]
	if !ok {
		return NodeStatus{}, false
	}
	return s.statuses[i], true
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

// Version increases whenever the ring's members or effective weights change
// (so at every reload while a node ramps up in slow start), and only then,
// so consumers can cheaply tell whether placement may have moved.
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

// AnyHealthy reports whether any known node is alive (Healthy), in the
// ring or not: while none is, no new conference can be placed anywhere.
func (s *Snapshot) AnyHealthy() bool {
	if s == nil {
		return false
	}
	for i := range s.statuses {
		if s.statuses[i].Healthy {
			return true
		}
	}
	return false
}
