package main

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
)

func newInstancesCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "instances", Short: "sipedge instances (each writes its own hash)"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List sipedge instances: site, server, state, dialogs, heartbeat, alive",
		Args:  cobra.NoArgs,
	}
	timeout := list.Flags().Duration("heartbeat-timeout", 5*time.Second, "an instance is alive while its heartbeat is younger than this")
	list.RunE = func(cmd *cobra.Command, _ []string) error { return a.instancesList(cmd, *timeout) }
	cmd.AddCommand(list, newInstancesRemoveCommand(a))
	return cmd
}

// instanceRow is one sipedge instance as `instances list` shows it.
type instanceRow struct {
	Name        string            `json:"name"`
	Site        string            `json:"site"`
	Server      string            `json:"server"`
	State       string            `json:"state"` // normal, draining or drained
	Dialogs     *int64            `json:"dialogs"`
	Deserviced  *bool             `json:"deserviced"` // nil: absent or not 0/1
	HeldBack    *bool             `json:"held_back"`  // deserviced but still admitting
	Addr        string            `json:"addr"`
	HeartbeatMs *int64            `json:"heartbeat_unix_ms"`
	AgeMs       *int64            `json:"heartbeat_age_ms"`
	Alive       bool              `json:"alive"`
	Fields      map[string]string `json:"fields"`
	heartbeat   time.Time
}

// loadInstances reads every instance in the instances set, sorted by name.
func (a *app) loadInstances(ctx context.Context, timeout time.Duration) ([]instanceRow, error) {
	names, err := a.rdb.SMembers(ctx, a.k.Instances()).Result()
	if err != nil {
		return nil, redisErr("read instances", err)
	}
	sort.Strings(names)
	cmds := make([]*redis.MapStringStringCmd, len(names))
	if len(names) > 0 {
		if _, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, name := range names {
				cmds[i] = p.HGetAll(ctx, a.k.Instance(name))
			}
			return nil
		}); err != nil {
			return nil, redisErr("read instance hashes", err)
		}
	}
	now := a.now()
	rows := make([]instanceRow, 0, len(names))
	for i, name := range names {
		rows = append(rows, parseInstance(a.k, name, cmds[i].Val(), now, timeout))
	}
	return rows, nil
}

// parseInstance reads an instance hash with the contract's parser; the
// flags and the dialog count are shown as stored when they are bad.
func parseInstance(k keys.Keys, name string, f map[string]string, now time.Time, timeout time.Duration) instanceRow {
	in, _ := contract.ParseInstance(k, name, f) // a bad heartbeat is left zero: never alive
	r := instanceRow{Name: name, Site: in.Site, Server: in.Server, State: in.State, Addr: in.Addr, Fields: f}
	if n, err := strconv.ParseInt(f[contract.InstanceDialogs], 10, 64); err == nil {
		r.Dialogs = &n
	}
	r.Deserviced, r.HeldBack = flag01(f[contract.InstanceDeserviced]), flag01(f[contract.InstanceHeldBack])
	if t := in.Heartbeat; t.UnixMilli() > 0 {
		r.heartbeat, r.HeartbeatMs, r.AgeMs = t, unixMs(t), ageMs(now, t)
		r.Alive = now.Sub(t) <= timeout
	}
	return r
}

// flag01 reads a "0"/"1" field; nil when absent or anything else.
func flag01(s string) *bool {
	var b bool
	switch strings.TrimSpace(s) {
	case "1":
		b = true
	case "0":
	default:
		return nil
	}
	return &b
}

// showFlag renders a 0/1 field: yes, no, "" when absent, or the bad value.
func showFlag(b *bool, raw string) string {
	switch {
	case b != nil:
		return yesNo(*b)
	case raw == "":
		return ""
	default:
		return "invalid: " + raw
	}
}

func (a *app) instancesList(cmd *cobra.Command, timeout time.Duration) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	rows, err := a.loadInstances(ctx, timeout)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if a.json {
		return printJSON(out, map[string]any{"instances": rows, "heartbeat_timeout_ms": timeout.Milliseconds()})
	}
	now := a.now()
	table := make([][]string, 0, len(rows))
	for _, r := range rows {
		dialogs := ""
		if r.Dialogs != nil {
			dialogs = strconv.FormatInt(*r.Dialogs, 10)
		}
		table = append(table, []string{r.Name, r.Site, r.Server, r.State, dialogs,
			showFlag(r.Deserviced, r.Fields["deserviced"]), showFlag(r.HeldBack, r.Fields["held_back"]),
			r.Addr, age(now, r.heartbeat), yesNo(r.Alive)})
	}
	return printTable(out, []string{"NAME", "SITE", "SERVER", "STATE", "DIALOGS", "DESERVICED", "HELD BACK",
		"ADDR", "HEARTBEAT", "ALIVE"}, table)
}
