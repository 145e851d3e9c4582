package main

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/sipedge/sipedge/internal/contract"
)

func newConfCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "conf", Short: "Active conferences (placement kept in Redis)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List active conferences: node, start, dialogs, owning instance, TTL",
		Args:  cobra.NoArgs,
		RunE:  a.confList,
	}, newConfShowCommand(a), newConfEndCommand(a), newConfDialCommand(a))
	return cmd
}

// confRow is one conference as `conf list` shows it.
type confRow struct {
	ID        string            `json:"id"`
	Node      string            `json:"node"`
	StartedMs *int64            `json:"started_unix_ms"`
	AgeMs     *int64            `json:"age_ms"`
	Dialogs   *int64            `json:"dialogs"`
	Instance  string            `json:"instance"`
	TTLMs     *int64            `json:"ttl_ms"` // nil: no expiry
	Fields    map[string]string `json:"fields"`
	started   time.Time
	ttl       time.Duration
}

func (a *app) confList(cmd *cobra.Command, _ []string) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()

	keys, err := a.scanConfKeys(ctx)
	if err != nil {
		return redisErr("scan conferences", err)
	}
	sort.Strings(keys)
	now := a.now()
	rows := make([]confRow, 0, len(keys))
	for _, key := range keys {
		r, found, err := a.readConf(ctx, strings.TrimPrefix(key, a.k.Conf("")), now)
		if err != nil {
			return err
		}
		if found { // else ended between SCAN and HGETALL
			rows = append(rows, r)
		}
	}

	out := cmd.OutOrStdout()
	if a.json {
		return printJSON(out, map[string]any{"conferences": rows})
	}
	table := make([][]string, 0, len(rows))
	for _, r := range rows {
		started, dialogs, ttl := "", "", "none"
		if !r.started.IsZero() {
			started = r.started.UTC().Format(time.RFC3339) + " (" + age(now, r.started) + ")"
		}
		if r.Dialogs != nil {
			dialogs = strconv.FormatInt(*r.Dialogs, 10)
		}
		if r.TTLMs != nil {
			ttl = roundDur(r.ttl).String()
		}
		table = append(table, []string{r.ID, r.Node, started, dialogs, r.Instance, ttl})
	}
	return printTable(out, []string{"CONFERENCE", "NODE", "STARTED", "DIALOGS", "INSTANCE", "TTL"}, table)
}

// readConf reads one conference hash and its TTL; found is false when the
// hash does not exist.
func (a *app) readConf(ctx context.Context, id string, now time.Time) (r confRow, found bool, err error) {
	key := a.k.Conf(id)
	fields, err := a.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return r, false, redisErr("read "+key, err)
	}
	if len(fields) == 0 {
		return r, false, nil
	}
	ttl, err := a.rdb.PTTL(ctx, key).Result()
	if err != nil {
		return r, false, redisErr("ttl "+key, err)
	}
	c, errs := contract.ParseConf(a.k, id, fields)
	bad := map[string]bool{}
	for _, e := range errs {
		bad[e.Field] = true
	}
	r = confRow{ID: id, Node: c.Node, Instance: c.Instance, Fields: fields, ttl: ttl}
	if t := c.Started; t.UnixMilli() > 0 {
		r.started, r.StartedMs, r.AgeMs = t, unixMs(t), ageMs(now, t)
	}
	if _, set := fields[contract.ConfDialogs]; set && !bad[contract.ConfDialogs] {
		n := int64(c.Dialogs)
		r.Dialogs = &n
	}
	if ttl >= 0 {
		ms := ttl.Milliseconds()
		r.TTLMs = &ms
	}
	return r, true, nil
}

// scanConfKeys walks every conference key with SCAN (on every master of a
// Cluster, in parallel), never KEYS, so a large keyspace does not block Redis.
func (a *app) scanConfKeys(ctx context.Context) ([]string, error) {
	var mu sync.Mutex
	seen := map[string]bool{}
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, a.k.ConfPattern(), 500).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			seen[iter.Val()] = true // SCAN may return a key twice
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	if cc, ok := a.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, a.rdb)
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	return keys, err
}
