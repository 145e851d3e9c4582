package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/ring"
)

func newMaintenanceCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "maintenance on|off NODE",
		Short: "Set a node's manual maintenance flag: on drains it, off returns it with slow start",
		Long: "on: the node takes no new conferences; its calls continue (state draining) until\n" +
			"they end (state maintenance) or drain_timeout passes. off: the node returns to\n" +
			"service and its ring weight ramps up over slow_start. Both start their clock at\n" +
			"once (drain_started, restored_at). With capable=0 the node is in forced\n" +
			"maintenance and the manual flag has no effect.",
		Args:      cobra.ExactArgs(2),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case "on":
				return a.nodesMaintenance(cmd, args[1], true)
			case "off":
				return a.nodesMaintenance(cmd, args[1], false)
			}
			return fmt.Errorf("bad maintenance %q: want on or off", args[0])
		},
	}
}

func (a *app) nodesMaintenance(cmd *cobra.Command, name string, on bool) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	f, err := a.rdb.HGetAll(ctx, a.k.Node(name)).Result()
	if err != nil {
		return redisErr("read node "+name, err)
	}
	if len(f) == 0 {
		return fmt.Errorf("maintenance %q: %w", name, errUnknownNode)
	}
	n, err := contract.ParseNode(a.k, name, f)
	if err != nil {
		return fmt.Errorf("maintenance %q: fix the node hash first: %w", name, err)
	}
	pol, err := a.loadPolicy(ctx)
	if err != nil {
		return err
	}
	flag := "0"
	if on {
		flag = "1"
	}
	prev := f["maintenance"]
	if err := a.rdb.HSet(ctx, a.k.Node(name), "maintenance", flag).Err(); err != nil {
		return redisErr("set maintenance of "+name, err)
	}
	// Judge the node as sipedge will, with the new flag, and record the
	// transition now so the drain (or slow-start) clock starts at once
	// rather than at the next reload of some instance.
	n.Maintenance = on
	now := a.now()
	snap := ring.BuildSnapshotFrom(ring.Inputs{Nodes: []ring.Node{n}, Now: now, Policy: pol.policy})
	st, _ := snap.Status(name)
	restored := false
	if st.InService {
		if restored, err = ring.MarkInService(ctx, a.rdb, a.k, name, now); err != nil {
			return redisErr("maintenance set, but recording the return to service failed", err)
		}
	} else if err := ring.MarkOutOfService(ctx, a.rdb, a.k, name, now); err != nil {
		return redisErr("maintenance set, but recording the drain start failed", err)
	}
	if err := a.publish(ctx, "node:"+name); err != nil {
		return err
	}

	var warnings []string
	if !n.Capable {
		warnings = append(warnings, "forced maintenance: the manual flag has no effect (capable=0)")
	} else if !on && !st.InService {
		warnings = append(warnings, "node stays out of service: "+st.OutReason)
	}
	calls, _ := a.rdb.HGet(ctx, a.k.NodeCalls(), name).Int()
	after, _ := a.rdb.HMGet(ctx, a.k.Node(name), "drain_started", "restored_at").Result()
	field := func(i int) *int64 {
		if s, ok := after[i].(string); ok {
			if t, ok := parseUnixMs(s); ok {
				return unixMs(t)
			}
		}
		return nil
	}
	if a.json {
		return a.done(cmd, map[string]any{"action": "maintenance", "node": name, "maintenance": on,
			"previous": prev, "in_service": st.InService, "out_reason": st.OutReason,
			"drain_started_unix_ms": field(0), "restored_at_unix_ms": field(1), "restored": restored,
			"node_calls": calls, "warnings": warnings}, "")
	}
	out := cmd.OutOrStdout()
	mode := "off"
	if on {
		mode = "on"
	}
	was := ""
	if prev == flag {
		was = " (already " + mode + ")"
	}
	fmt.Fprintf(out, "node %s maintenance %s%s\n", name, mode, was)
	switch {
	case !st.InService:
		fmt.Fprintf(out, "  out of service (%s): no new conferences; %s continue", st.OutReason, plural(int64(calls), "call"))
		if pol.settings.DrainTimeout > 0 {
			fmt.Fprintf(out, " for up to drain_timeout %s (then %s)\n", pol.settings.DrainTimeout, drainAction(pol.settings.DrainBye))
		} else {
			fmt.Fprintln(out, " (no drain timeout)")
		}
		fmt.Fprintf(out, "  follow it with: sipedgectl drain --wait %s\n", name)
	case restored && pol.settings.SlowStart > 0:
		fmt.Fprintf(out, "  back in service: its weight ramps up over slow_start %s\n", pol.settings.SlowStart)
	default:
		fmt.Fprintln(out, "  in service")
	}
	if len(warnings) > 0 {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+strings.Join(warnings, "; "))
	}
	return nil
}
