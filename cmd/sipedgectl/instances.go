package main

import (
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"
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
	cmd.AddCommand(list)
	return cmd
}

// instanceRow is one sipedge instance as `instances list` shows it.
type instanceRow struct {
	Name        string            `json:"name"`
	Site        string            `json:"site"`
	Server      string            `json:"server"`
	State       string            `json:"state"`
	Dialogs     *int64            `json:"dialogs"`
	Addr        string            `json:"addr"`
	HeartbeatMs *int64            `json:"heartbeat_unix_ms"`
	AgeMs       *int64            `json:"heartbeat_age_ms"`
	Alive       bool              `json:"alive"`
	Fields      map[string]string `json:"fields"`
	heartbeat   time.Time
}

func (a *app) instancesList(cmd *cobra.Command, timeout time.Duration) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()

	names, err := a.rdb.SMembers(ctx, a.k.Instances()).Result()
	if err != nil {
		return redisErr("read instances", err)
	}
	sort.Strings(names)
	now := a.now()
	rows := make([]instanceRow, 0, len(names))
	for _, name := range names {
		f, err := a.rdb.HGetAll(ctx, a.k.Instance(name)).Result()
		if err != nil {
			return redisErr("read instance "+name, err)
		}
		r := instanceRow{Name: name, Site: f["site"], Server: f["server"], State: f["state"], Addr: f["addr"], Fields: f}
		if n, err := strconv.ParseInt(f["dialogs"], 10, 64); err == nil {
			r.Dialogs = &n
		}
		if t, ok := parseUnixMs(f["heartbeat"]); ok {
			r.heartbeat, r.HeartbeatMs, r.AgeMs = t, unixMs(t), ageMs(now, t)
			r.Alive = now.Sub(t) <= timeout
		}
		rows = append(rows, r)
	}

	out := cmd.OutOrStdout()
	if a.json {
		return printJSON(out, map[string]any{"instances": rows, "heartbeat_timeout_ms": timeout.Milliseconds()})
	}
	table := make([][]string, 0, len(rows))
	for _, r := range rows {
		dialogs := ""
		if r.Dialogs != nil {
			dialogs = strconv.FormatInt(*r.Dialogs, 10)
		}
		alive := "no"
		if r.Alive {
			alive = "yes"
		}
		table = append(table, []string{r.Name, r.Site, r.Server, r.State, dialogs, r.Addr, age(now, r.heartbeat), alive})
	}
	return printTable(out, []string{"NAME", "SITE", "SERVER", "STATE", "DIALOGS", "ADDR", "HEARTBEAT", "ALIVE"}, table)
}
