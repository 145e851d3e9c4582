package contract

import (
	"math"
	"net"
	"strconv"
	"strings"
	"time"

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

	// Written by sipedge (ring.MarkOutOfService, MarkInService), not operators.
	DrainStarted time.Time // field "drain_started" unix ms: went out of service; zero while in service
	RestoredAt   time.Time // field "restored_at" unix ms: last came back into service; drives slow start
}

// Defaults for fields a node hash may leave out.
const (
	DefaultWeight    = 100.0
	DefaultTransport = "udp"
)

// Node hash fields.
const (
	NodeAddr         = "addr"
	NodeTransport    = "transport"
	NodeSite         = "site"
	NodeServer       = "server"
	NodeWeight       = "weight"
	NodeMaintenance  = "maintenance"
	NodeCapable      = "capable"
	NodeLoad         = "load"
	NodeHeartbeat    = "heartbeat"
	NodeDrainStarted = "drain_started"
	NodeRestoredAt   = "restored_at"
)

// ParseNode validates one node hash. Empty or absent optional fields take
// their defaults; a value that is present but wrong is an error (a
// *FieldError), because guessing what an operator meant by weight "1OO"
// would place calls wrongly on every instance at once.
func ParseNode(k keys.Keys, name string, fields map[string]string) (Node, error) {
	key := k.Node(name)
	fail := func(field string, sentinel error, format string, args ...any) (Node, error) {
		return Node{}, bad(key, field, fields[field], sentinel, format, args...)
	}
	if name == "" {
		return fail("", ErrMissing, "empty node name")
	}
	get := func(f string) string { return strings.TrimSpace(fields[f]) }
	n := Node{Name: name, Addr: get(NodeAddr), Site: get(NodeSite), Server: get(NodeServer),
		Transport: DefaultTransport, Weight: DefaultWeight, Capable: true}

	if n.Addr == "" {
		return fail(NodeAddr, ErrMissing, "missing")
	}
	if !ValidHostPort(n.Addr) {
		return fail(NodeAddr, ErrNotHostPort, "%q is not host:port", n.Addr)
	}
	if v := get(NodeTransport); v != "" {
		switch t := strings.ToLower(v); t {
		case "udp", "tcp", "tls", "ws", "wss":
			n.Transport = t
		default:
			return fail(NodeTransport, ErrUnknown, "%q is not udp, tcp, tls, ws or wss", v)
		}
	}
	if v := get(NodeWeight); v != "" {
		w, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil || math.IsNaN(w) || math.IsInf(w, 0):
			return fail(NodeWeight, ErrNotNumber, "%q is not a number", v)
		case w < 0:
			return fail(NodeWeight, ErrOutOfRange, "%q is negative", v)
		}
		n.Weight = w
	}
	var ok bool
	if n.Maintenance, ok = ParseFlag(get(NodeMaintenance), false); !ok {
		return fail(NodeMaintenance, ErrNotFlag, "%q is not 0 or 1", get(NodeMaintenance))
	}
	if n.Capable, ok = ParseFlag(get(NodeCapable), true); !ok {
		return fail(NodeCapable, ErrNotFlag, "%q is not 0 or 1", get(NodeCapable))
	}
	if v := get(NodeLoad); v != "" {
		l, err := strconv.ParseFloat(v, 64)
		if err != nil || !(l >= 0 && l <= 1) {
			return fail(NodeLoad, ErrOutOfRange, "%q is not a number from 0 to 1", v)
		}
		n.Load = l
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{NodeHeartbeat, &n.Heartbeat}, {NodeDrainStarted, &n.DrainStarted}, {NodeRestoredAt, &n.RestoredAt}} {
		if v := get(f.name); v != "" {
			t, ok := ParseUnixMilli(v)
			if !ok {
				return fail(f.name, ErrNotUnixMs, "%q is not unix milliseconds", v)
			}
			*f.dst = t
		}
	}
	return n, nil
}

// noHash is the error of a set member whose hash does not exist.
func noHash(setKey, key string) *FieldError {
	return &FieldError{Key: key, Err: ErrNoHash, Reason: "listed in " + setKey + " but " + key + " does not exist"}
}

// ParseFlag reads a "0"/"1" field; "" is def. ok is false for anything else.
func ParseFlag(v string, def bool) (val, ok bool) {
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

// FormatFlag is the stored form of a flag field.
func FormatFlag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// ParseUnixMilli reads a non-negative unix-milliseconds field.
func ParseUnixMilli(v string) (time.Time, bool) {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// FormatUnixMilli is the stored form of a time field.
func FormatUnixMilli(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// ValidHostPort reports whether addr is host:port with a non-empty host
// and a port 1..65535.
func ValidHostPort(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	return err == nil && p > 0
}

// ParseNodeCalls reads the node_calls hash: active dialogs through sipedge
// per node. A value that is not a non-negative integer counts as 0 and is
// reported.
func ParseNodeCalls(k keys.Keys, raw map[string]string) (map[string]int, []*FieldError) {
	calls := make(map[string]int, len(raw))
	var errs []*FieldError
	for node, v := range raw {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, bad(k.NodeCalls(), node, v, ErrNotNumber, "%q is not a call count", v))
			continue
		}
		calls[node] = n
	}
	return calls, errs
}
