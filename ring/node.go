package ring

import (
	"context"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/keys"
)

// Node is one media node as described by its sipedge:node:<name> hash.
type Node struct {
	Name, Addr, Transport, Site, Server string    // Transport lowercased, default "udp"
	Weight                              float64   // default 100; >= 0
	Maintenance                         bool      // field "maintenance" "0"/"1" (default 0)
	Capable                             bool      // field "capable" "1"/"0" (default 1)
	Load                                float64   // field "load" 0..1 (default 0)
	Heartbeat                           time.Time // field "heartbeat" unix ms; zero when absent

	// Written by sipedge (MarkOutOfService, MarkInService), not operators.
	DrainStarted time.Time // field "drain_started" unix ms: went out of service; zero while in service
	RestoredAt   time.Time // field "restored_at" unix ms: last came back into service; drives slow start
}

// Defaults for fields a node hash may leave out.
const (
	DefaultWeight    = 100.0
	DefaultTransport = "udp"
)

// NodeError says which node, and which field of its hash, is invalid.
// Field is "" when the node as a whole is (e.g. its hash does not exist).
type NodeError struct {
	Node  string
	Field string
	Msg   string // what is wrong, quoting the bad value
}

func (e *NodeError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("node %q: %s", e.Node, e.Msg)
	}
	return fmt.Sprintf("node %q: field %q: %s", e.Node, e.Field, e.Msg)
}

// ParseNode validates one node hash. Empty or absent optional fields take
// their defaults; a value that is present but wrong is an error, because
// guessing what an operator meant by weight "1OO" would place calls wrongly
// on every instance at once.
func ParseNode(name string, fields map[string]string) (Node, error) {
	bad := func(field, format string, args ...any) (Node, error) {
		return Node{}, &NodeError{Node: name, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if name == "" {
		return bad("", "empty node name")
	}
	get := func(f string) string { return strings.TrimSpace(fields[f]) }
	n := Node{Name: name, Addr: get("addr"), Site: get("site"), Server: get("server"),
		Transport: DefaultTransport, Weight: DefaultWeight, Capable: true}

	if n.Addr == "" {
		return bad("addr", "missing")
	}
	if !validHostPort(n.Addr) {
		return bad("addr", "%q is not host:port", n.Addr)
	}
	if v := get("transport"); v != "" {
		switch t := strings.ToLower(v); t {
		case "udp", "tcp", "tls", "ws", "wss":
			n.Transport = t
		default:
			return bad("transport", "%q is not udp, tcp, tls, ws or wss", v)
		}
	}
	if v := get("weight"); v != "" {
		w, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil || math.IsNaN(w) || math.IsInf(w, 0):
			return bad("weight", "%q is not a number", v)
		case w < 0:
			return bad("weight", "%q is negative", v)
		}
		n.Weight = w
	}
	var ok bool
	if n.Maintenance, ok = parseFlag(get("maintenance"), false); !ok {
		return bad("maintenance", "%q is not 0 or 1", get("maintenance"))
	}
	if n.Capable, ok = parseFlag(get("capable"), true); !ok {
		return bad("capable", "%q is not 0 or 1", get("capable"))
	}
	if v := get("load"); v != "" {
		l, err := strconv.ParseFloat(v, 64)
		if err != nil || !(l >= 0 && l <= 1) {
			return bad("load", "%q is not a number from 0 to 1", v)
		}
		n.Load = l
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"heartbeat", &n.Heartbeat}, {"drain_started", &n.DrainStarted}, {"restored_at", &n.RestoredAt}} {
		if v := get(f.name); v != "" {
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil || ms < 0 {
				return bad(f.name, "%q is not unix milliseconds", v)
			}
			*f.dst = time.UnixMilli(ms)
		}
	}
	return n, nil
}

func parseFlag(v string, def bool) (bool, bool) {
	switch v {
	case "":
		return def, true
	case "0":
		return false, true
	case "1":
		return true, true
	}
	return false, false
}

func validHostPort(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	return err == nil && p > 0
}

// Load reads the node set and every node hash in one pipeline. Nodes come
// back sorted by name; each invalid one is reported in errs (a *NodeError)
// and left out. err is set only when Redis itself failed, in which case
// nothing read is returned, so callers never mix old and new state.
func Load(ctx context.Context, rdb redis.UniversalClient, k keys.Keys) (nodes []Node, errs []error, err error) {
	names, err := rdb.SMembers(ctx, k.Nodes()).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", k.Nodes(), err)
	}
	if len(names) == 0 {
		return nil, nil, nil
	}
	slices.Sort(names)
	cmds := make([]*redis.MapStringStringCmd, len(names))
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, name := range names {
			cmds[i] = p.HGetAll(ctx, k.Node(name))
		}
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("read %d node hashes: %w", len(names), err)
	}
	for i, name := range names {
		fields := cmds[i].Val()
		if len(fields) == 0 {
			errs = append(errs, &NodeError{Node: name,
				Msg: fmt.Sprintf("listed in %s but %s does not exist", k.Nodes(), k.Node(name))})
			continue
		}
		n, err := ParseNode(name, fields)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		nodes = append(nodes, n)
	}
	return nodes, errs, nil
}
