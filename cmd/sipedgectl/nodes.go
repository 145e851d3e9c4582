package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/ring"
)

// errUnknownNode is returned for a node name that is not registered.
var errUnknownNode = errors.New("unknown node")

func newNodesCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "nodes", Short: "Media nodes in the ring"}

	list := &cobra.Command{
		Use:   "list",
		Short: "List media nodes with their flags, load, heartbeat and health",
		Args:  cobra.NoArgs,
	}
	hbTimeout := list.Flags().Duration("heartbeat-timeout", 5*time.Second, "a heartbeat older than this makes a node unhealthy")
	list.RunE = func(cmd *cobra.Command, _ []string) error { return a.nodesList(cmd, *hbTimeout) }

	add := &cobra.Command{
		Use:   "add NAME ADDR",
		Short: "Register a media node (ADDR is host:port)",
		Args:  cobra.ExactArgs(2),
	}
	weight := add.Flags().String("weight", "100", "ring weight (number >= 0)")
	transport := add.Flags().String("transport", "udp", "SIP transport: udp, tcp, tls, ws or wss")
	site := add.Flags().String("site", "default", "site of the node")
	server := add.Flags().String("server", "", "server (host machine) the node runs on, for deservice profiles")
	add.RunE = func(cmd *cobra.Command, args []string) error {
		return a.nodesAdd(cmd, args[0], args[1], *weight, *transport, *site, *server)
	}

	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Unregister a media node (SREM + DEL)",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.nodesRemove(cmd, args[0]) },
	}
	setWeight := &cobra.Command{
		Use:   "set-weight NAME N",
		Short: "Change a node's ring weight (number >= 0; 0 takes it out of new placements)",
		Args:  cobra.ExactArgs(2),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.nodesSetWeight(cmd, args[0], args[1]) },
	}
	cmd.AddCommand(list, add, remove, setWeight, newMaintenanceCommand(a))
	return cmd
}

// nodeRow is one media node as `nodes list` shows it.
type nodeRow struct {
	Name        string            `json:"name"`
	Addr        string            `json:"addr"`
	Transport   string            `json:"transport"`
	Site        string            `json:"site"`
	Server      string            `json:"server"`
	Weight      *float64          `json:"weight"`
	Maintenance *bool             `json:"maintenance"`
	Capable     *bool             `json:"capable"`
	Load        *float64          `json:"load"`
	Calls       *int64            `json:"calls,omitempty"` // as the node reports it
	HeartbeatMs *int64            `json:"heartbeat_unix_ms"`
	AgeMs       *int64            `json:"heartbeat_age_ms"`
	Valid       bool              `json:"valid"`
	Error       string            `json:"error,omitempty"`
	Healthy     bool              `json:"healthy"`
	Eligible    bool              `json:"eligible"`
	Reason      string            `json:"reason,omitempty"`
	Fields      map[string]string `json:"fields"`
	heartbeat   time.Time

	// The service verdict (issue 3), for valid nodes.
	State           string   `json:"state,omitempty"` // normal, draining or maintenance
	InService       bool     `json:"in_service"`
	OutReason       string   `json:"out_reason,omitempty"`
	NodeCalls       int      `json:"node_calls"` // dialogs through sipedge on it (node_calls)
	ReportedLoad    *float64 `json:"reported_load,omitempty"`
	EffectiveWeight float64  `json:"effective_weight"`
	KeptActive      bool     `json:"kept_active"`
	DrainExpired    bool     `json:"drain_expired"`
	DrainStartedMs  *int64   `json:"drain_started_unix_ms"`
	RestoredAtMs    *int64   `json:"restored_at_unix_ms"`
	RampLeftMs      *int64   `json:"ramp_left_ms,omitempty"` // in slow start: time to full weight
	DownOn          []string `json:"down_on,omitempty"`      // live instances whose probes fail it or hold it suspect
	drainStarted    time.Time
	rampLeft        time.Duration
}

// nodeView is everything known about the nodes at one moment.
type nodeView struct {
	rows     []nodeRow // sorted by name
	snapshot *ring.Snapshot
	policy   policyView
	badCalls map[string]string // node -> bad node_calls value (counted as 0)
	note     string            // what the health shown rests on
}

// loadNodes reads the nodes with contract.Load, as every sipedge instance does,
// and judges them with ring.BuildSnapshotFrom under the deservice profiles,
// settings and node_calls in Redis, probes assumed up (probe state lives in
// each instance). The raw hashes are read too, for display.
func (a *app) loadNodes(ctx context.Context, hbTimeout time.Duration) (nodeView, error) {
	pol, err := a.loadPolicy(ctx)
	if err != nil {
		return nodeView{}, err
	}
	cs, err := contract.Load(ctx, a.rdb, a.k, contract.DefaultSettings(), nil)
	if err != nil {
		return nodeView{}, redisErr("load nodes", err)
	}
	nodes, calls := cs.Nodes, cs.Calls
	badCalls := map[string]string{}
	for _, fe := range cs.CallErrs {
		badCalls[fe.Field] = fe.Value
	}
	now := a.now()
	seen, err := a.loadSeen(ctx, cs, now, hbTimeout)
	if err != nil {
		return nodeView{}, err
	}
	snap := ring.BuildSnapshotFrom(ring.Inputs{
		Nodes:   nodes,
		ProbeUp: seen.probeUp,
		Suspect: seen.suspect,
		Now:     now,
		Health:  ring.HealthOptions{HeartbeatTimeout: hbTimeout, ProbeInterval: time.Second},
		Policy:  pol.policy,
		Calls:   calls,
	})

	invalid := map[string]string{}
	names := make([]string, 0, len(nodes)+len(cs.NodeErrs))
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	for name, fe := range cs.NodeErrs {
		msg := fe.Reason
		if fe.Field != "" {
			msg = fe.Field + ": " + fe.Reason
		}
		invalid[name] = msg
		names = append(names, name)
	}
	sort.Strings(names)

	raw := make([]*redis.MapStringStringCmd, len(names))
	if _, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, name := range names {
			raw[i] = p.HGetAll(ctx, a.k.Node(name))
		}
		return nil
	}); err != nil {
		return nodeView{}, redisErr("read node hashes", err)
	}

	rows := make([]nodeRow, 0, len(names))
	for i, name := range names {
		r := rawNodeRow(name, raw[i].Val(), now)
		r.NodeCalls = calls[name]
		if msg, bad := invalid[name]; bad {
			r.Error = msg
		} else if st, ok := snap.Status(name); ok {
			n := st.Node
			r.Valid = true
			r.Addr, r.Transport, r.Site, r.Server = n.Addr, n.Transport, n.Site, n.Server
			r.Weight, r.Maintenance, r.Capable, r.Load = &n.Weight, &n.Maintenance, &n.Capable, &n.Load
			r.Healthy, r.Eligible, r.Reason = st.Healthy, st.Eligible, st.Reason
			if on := seen.downOn[name]; len(on) > 0 {
				r.DownOn = on
				r.Reason += " (on " + strings.Join(on, ", ") + ")"
			}
			r.State, r.InService, r.OutReason = st.State, st.InService, st.OutReason
			r.ReportedLoad, r.EffectiveWeight = &st.ReportedLoad, st.EffectiveWeight
			r.KeptActive, r.DrainExpired = st.KeptActive, st.DrainExpired
			r.drainStarted, r.DrainStartedMs, r.RestoredAtMs = n.DrainStarted, unixMs(n.DrainStarted), unixMs(n.RestoredAt)
			if left := rampLeft(n, now, pol.settings.SlowStart); st.InService && st.Eligible && left > 0 {
				r.rampLeft = left
				ms := left.Milliseconds()
				r.RampLeftMs = &ms
			}
		}
		rows = append(rows, r)
	}
	return nodeView{rows: rows, snapshot: snap, policy: pol, badCalls: badCalls, note: seen.note()}, nil
}

// rampLeft is how long until n, back in service, reaches its full weight;
// 0 when it is not ramping.
func rampLeft(n ring.Node, now time.Time, slowStart time.Duration) time.Duration {
	if slowStart <= 0 || n.RestoredAt.IsZero() || !n.DrainStarted.IsZero() {
		return 0
	}
	return max(0, n.RestoredAt.Add(slowStart).Sub(now))
}

// rawNodeRow fills what can be read from the hash even when it is invalid.
func rawNodeRow(name string, f map[string]string, now time.Time) nodeRow {
	r := nodeRow{Name: name, Addr: f["addr"], Transport: f["transport"], Site: f["site"], Server: f["server"], Fields: f}
	if v, err := strconv.ParseFloat(f["load"], 64); err == nil {
		r.Load = &v
	}
	if v, err := strconv.ParseInt(f["calls"], 10, 64); err == nil {
		r.Calls = &v
	}
	if t, ok := parseUnixMs(f["heartbeat"]); ok {
		r.heartbeat, r.HeartbeatMs, r.AgeMs = t, unixMs(t), ageMs(now, t)
	}
	return r
}

func (a *app) nodesList(cmd *cobra.Command, hbTimeout time.Duration) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	view, err := a.loadNodes(ctx, hbTimeout)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if a.json {
		return printJSON(out, map[string]any{
			"nodes":                view.rows,
			"heartbeat_timeout_ms": hbTimeout.Milliseconds(),
			"note":                 view.note,
		})
	}
	now := a.now()
	table := make([][]string, 0, len(view.rows))
	for _, r := range view.rows {
		health, reason := "down", r.Reason
		switch {
		case !r.Valid:
			health, reason = "invalid", r.Error
		case r.Eligible:
			health = "in ring"
		case r.Healthy:
			health = "up"
		}
		load := ""
		if r.Load != nil {
			load = strconv.FormatFloat(*r.Load*100, 'f', 0, 64) + "%"
		}
		weight, maint, capable := r.Fields["weight"], r.Fields["maintenance"], r.Fields["capable"]
		if r.Valid {
			weight, maint, capable = formatFloat(*r.Weight), yesNo(*r.Maintenance), yesNo(*r.Capable)
		}
		table = append(table, []string{r.Name, r.Addr, r.Transport, r.Site, r.Server, weight, maint, capable,
			load, age(now, r.heartbeat), health, reason})
	}
	return printTable(out, []string{"NAME", "ADDR", "TRANSPORT", "SITE", "SERVER", "WEIGHT", "MAINT", "CAPABLE",
		"LOAD", "HEARTBEAT", "HEALTH", "REASON"}, table)
}

func (a *app) nodesAdd(cmd *cobra.Command, name, addr, weight, transport, site, server string) error {
	if err := validName(name); err != nil {
		return err
	}
	if err := validAddr(addr); err != nil {
		return err
	}
	w, err := parseWeight(weight)
	if err != nil {
		return err
	}
	transport = strings.ToLower(transport)
	switch transport {
	case "udp", "tcp", "tls", "ws", "wss":
	default:
		return fmt.Errorf("bad --transport %q: want udp, tcp, tls, ws or wss", transport)
	}

	ctx, cancel := a.ctx(cmd)
	defer cancel()
	if exists, err := a.nodeExists(ctx, name); err != nil {
		return err
	} else if exists {
		return fmt.Errorf("node %q already exists: use set-weight, or remove it first", name)
	}
	// The hash is complete before the name joins the set, so no reader sees
	// a member without its fields.
	fields := []any{"addr", addr, "transport", transport, "weight", formatFloat(w), "maintenance", "0", "capable", "1"}
	if site != "" {
		fields = append(fields, "site", site)
	}
	if server != "" {
		fields = append(fields, "server", server)
	}
	if err := a.rdb.HSet(ctx, a.k.Node(name), fields...).Err(); err != nil {
		return redisErr("write node "+name, err)
	}
	if err := a.rdb.SAdd(ctx, a.k.Nodes(), name).Err(); err != nil {
		return redisErr("add node "+name, err)
	}
	if err := a.publish(ctx, "node:"+name); err != nil {
		return err
	}
	return a.done(cmd, map[string]any{"action": "add", "node": name, "addr": addr, "weight": w},
		"node %s added (%s, weight %s)", name, addr, formatFloat(w))
}

func (a *app) nodesRemove(cmd *cobra.Command, name string) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	if exists, err := a.nodeExists(ctx, name); err != nil {
		return err
	} else if !exists {
		return fmt.Errorf("remove %q: %w", name, errUnknownNode)
	}
	hb, _ := a.rdb.HGet(ctx, a.k.Node(name), "heartbeat").Result()
	// Out of the set first: readers never see a member without its hash.
	if err := a.rdb.SRem(ctx, a.k.Nodes(), name).Err(); err != nil {
		return redisErr("remove node "+name, err)
	}
	if err := a.rdb.Del(ctx, a.k.Node(name)).Err(); err != nil {
		return redisErr("delete node "+name, err)
	}
	if err := a.publish(ctx, "node:"+name); err != nil {
		return err
	}
	if t, ok := parseUnixMs(hb); ok && a.now().Sub(t) < time.Minute {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: node %s sent a heartbeat %s; a running confnode registers itself "+
			"again within a second. Stop it first, or drain it with maintenance instead.\n", name, age(a.now(), t))
	}
	return a.done(cmd, map[string]any{"action": "remove", "node": name}, "node %s removed", name)
}

func (a *app) nodesSetWeight(cmd *cobra.Command, name, weight string) error {
	w, err := parseWeight(weight)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	if exists, err := a.nodeExists(ctx, name); err != nil {
		return err
	} else if !exists {
		return fmt.Errorf("set-weight %q: %w", name, errUnknownNode)
	}
	old, _ := a.rdb.HGet(ctx, a.k.Node(name), "weight").Result()
	if err := a.rdb.HSet(ctx, a.k.Node(name), "weight", formatFloat(w)).Err(); err != nil {
		return redisErr("set weight of "+name, err)
	}
	if err := a.publish(ctx, "node:"+name); err != nil {
		return err
	}
	return a.done(cmd, map[string]any{"action": "set-weight", "node": name, "weight": w, "previous": old},
		"node %s weight %s (was %s)", name, formatFloat(w), orDash(old))
}

// nodeExists reports whether name is in the node set or has a hash.
func (a *app) nodeExists(ctx context.Context, name string) (bool, error) {
	member, err := a.rdb.SIsMember(ctx, a.k.Nodes(), name).Result()
	if err != nil {
		return false, redisErr("read nodes", err)
	}
	if member {
		return true, nil
	}
	n, err := a.rdb.Exists(ctx, a.k.Node(name)).Result()
	if err != nil {
		return false, redisErr("read node "+name, err)
	}
	return n > 0, nil
}

// done reports a successful write, as JSON or as one line.
func (a *app) done(cmd *cobra.Command, doc map[string]any, format string, args ...any) error {
	if a.json {
		doc["ok"] = true
		return printJSON(cmd.OutOrStdout(), doc)
	}
	_, err := fmt.Fprintf(cmd.OutOrStdout(), format+"\n", args...)
	return err
}

// parseWeight accepts a finite number >= 0.
func parseWeight(s string) (float64, error) {
	w, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(w) || math.IsInf(w, 0) {
		return 0, fmt.Errorf("bad weight %q: want a number >= 0", s)
	}
	if w < 0 {
		return 0, fmt.Errorf("bad weight %q: must be >= 0", s)
	}
	return w, nil
}

// validName rejects names that would make odd keys or SCAN patterns.
func validName(name string) error {
	if name == "" || strings.ContainsAny(name, " \t\r\n*?[]") {
		return fmt.Errorf("bad node name %q: must be non-empty, without spaces or *?[]", name)
	}
	return nil
}

// validAddr accepts host:port with a port in 1..65535.
func validAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("bad address %q: want host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("bad address %q: port must be 1..65535", addr)
	}
	return nil
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// probeNote says what this CLI cannot see.
const probeNote = "health assumes SIP OPTIONS probes succeed: probe state is kept per sipedge instance " +
	"and is not in Redis (see each instance's /api/status)"
