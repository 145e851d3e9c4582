package contract

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/keys"
)

// Snapshot is the whole Redis contract as read at ReadAt: immutable once
// published, read by the ring, admission and media without locking.
type Snapshot struct {
	Nodes      []Node                 // valid media nodes, sorted by name
	NodeErrs   map[string]*FieldError // node name -> why it is invalid (left out of Nodes)
	Calls      map[string]int         // node_calls: active dialogs through sipedge per node
	CallErrs   []*FieldError          // bad node_calls values (counted as 0)
	Profiles   map[string]Profile     // deservice profiles with a hash, by id
	Exceptions map[string]bool        // instance names exempt from the 503 rule
	Instances  map[string]Instance    // sipedge instances, by name
	Settings   Settings               // sipedge:settings over the defaults, bad fields at their last good value
	Bad        []*FieldError          // bad profile, instance and settings values (last good kept)
	ReadAt     time.Time
	Version    uint64 // 1 for the first load, +1 for each

	// set members as read, guessed at the next load so that it needs one
	// round trip while the sets do not change.
	nodeNames, profileIDs, instanceNames []string
}

// Empty is the snapshot before any load: no nodes, default settings.
func Empty(defaults Settings) *Snapshot {
	return &Snapshot{NodeErrs: map[string]*FieldError{}, Calls: map[string]int{}, Profiles: map[string]Profile{},
		Exceptions: map[string]bool{}, Instances: map[string]Instance{}, Settings: defaults}
}

// Load reads the whole contract: node, profile and instance sets and
// hashes, exceptions, settings and node_calls. It pipelines the sets with
// the hashes of the members prev listed, so while no member is added it is
// one round trip; new members take a second one. Every record is parsed
// and validated here. err is set only when Redis itself failed, and then
// nothing is returned, so callers never mix old and new state. prev may be
// nil (no history: nothing guessed, bad values fall back to defaults).
func Load(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, defaults Settings, prev *Snapshot) (*Snapshot, error) {
	if prev == nil {
		prev = Empty(defaults)
	}
	pipe := rdb.Pipeline()
	nodesCmd := pipe.SMembers(ctx, k.Nodes())
	profCmd := pipe.SMembers(ctx, k.Profiles())
	instCmd := pipe.SMembers(ctx, k.Instances())
	excCmd := pipe.SMembers(ctx, k.Exceptions())
	setCmd := pipe.HGetAll(ctx, k.Settings())
	callsCmd := pipe.HGetAll(ctx, k.NodeCalls())
	nodeH := hashes(ctx, pipe, prev.nodeNames, k.Node)
	profH := hashes(ctx, pipe, prev.profileIDs, k.Profile)
	instH := hashes(ctx, pipe, prev.instanceNames, k.Instance)
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("read the contract: %w", err)
	}
	for _, c := range []redis.Cmder{nodesCmd, profCmd, instCmd, excCmd, setCmd, callsCmd} {
		if err := c.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", c.Args()[1], err)
		}
	}
	nodeNames, profIDs, instNames := sorted(nodesCmd.Val()), sorted(profCmd.Val()), sorted(instCmd.Val())

	// Members the guess missed: one more round trip.
	pipe = rdb.Pipeline()
	more := hashes(ctx, pipe, missing(nodeNames, nodeH), k.Node)
	moreP := hashes(ctx, pipe, missing(profIDs, profH), k.Profile)
	moreI := hashes(ctx, pipe, missing(instNames, instH), k.Instance)
	if len(more)+len(moreP)+len(moreI) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("read new members of the contract: %w", err)
		}
	}
	merge := func(dst, src map[string]*redis.MapStringStringCmd) (map[string]map[string]string, error) {
		out := make(map[string]map[string]string, len(dst)+len(src))
		for _, m := range []map[string]*redis.MapStringStringCmd{dst, src} {
			for name, c := range m {
				if err := c.Err(); err != nil {
					return nil, fmt.Errorf("read %s: %w", c.Args()[1], err)
				}
				out[name] = c.Val()
			}
		}
		return out, nil
	}
	nodeF, err := merge(nodeH, more)
	if err != nil {
		return nil, err
	}
	profF, err := merge(profH, moreP)
	if err != nil {
		return nil, err
	}
	instF, err := merge(instH, moreI)
	if err != nil {
		return nil, err
	}

	s := &Snapshot{NodeErrs: map[string]*FieldError{}, Profiles: make(map[string]Profile, len(profIDs)),
		Exceptions: make(map[string]bool, len(excCmd.Val())), Instances: make(map[string]Instance, len(instNames)),
		Version: prev.Version + 1, nodeNames: nodeNames, profileIDs: profIDs, instanceNames: instNames}
	for _, name := range nodeNames {
		f := nodeF[name]
		if len(f) == 0 {
			s.NodeErrs[name] = noHash(k.Nodes(), k.Node(name))
			continue
		}
		n, err := ParseNode(k, name, f)
		if err != nil {
			s.NodeErrs[name] = err.(*FieldError)
			continue
		}
		s.Nodes = append(s.Nodes, n)
	}
	s.Calls, s.CallErrs = ParseNodeCalls(k, callsCmd.Val())
	for _, id := range profIDs {
		f := profF[id]
		if len(f) == 0 {
			continue // listed but no hash: nothing to apply
		}
		p, fe := ParseProfile(k, id, f, prev.Profiles[id])
		if fe != nil {
			s.Bad = append(s.Bad, fe)
		}
		s.Profiles[id] = p
	}
	for _, n := range excCmd.Val() {
		s.Exceptions[n] = true
	}
	for _, n := range instNames {
		in, fe := ParseInstance(k, n, instF[n])
		if fe != nil {
			s.Bad = append(s.Bad, fe)
		}
		s.Instances[n] = in
	}
	var errs []*FieldError
	s.Settings, errs = ParseSettings(k, defaults, prev.Settings, setCmd.Val())
	s.Bad = append(s.Bad, errs...)
	return s, nil
}

func hashes(ctx context.Context, p redis.Pipeliner, names []string, key func(string) string) map[string]*redis.MapStringStringCmd {
	out := make(map[string]*redis.MapStringStringCmd, len(names))
	for _, n := range names {
		out[n] = p.HGetAll(ctx, key(n))
	}
	return out
}

func missing(names []string, have map[string]*redis.MapStringStringCmd) []string {
	var out []string
	for _, n := range names {
		if _, ok := have[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}

// LoadNodes reads the node set and every node hash (sipedgectl, and tools
// that need only the nodes). Nodes come back sorted by name; invalid ones
// are in invalid, by name.
func LoadNodes(ctx context.Context, rdb redis.UniversalClient, k keys.Keys) (nodes []Node, invalid map[string]*FieldError, err error) {
	s, err := Load(ctx, rdb, k, DefaultSettings(), nil)
	if err != nil {
		return nil, nil, err
	}
	return s.Nodes, s.NodeErrs, nil
}

// NodeName is the node a node-hash key names ("" for another key).
func NodeName(k keys.Keys, key string) string {
	name, ok := strings.CutPrefix(key, k.Node(""))
	if !ok {
		return ""
	}
	return name
}
