package main

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// errNoNode is returned when no node can take the key.
var errNoNode = errors.New("no media node available")

func newRingCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "ring", Short: "The consistent-hash ring of media nodes"}
	lookup := &cobra.Command{
		Use:   "lookup KEY",
		Short: "Show which node a key (conference id or AOR) maps to, and why",
		Long: "Shows the node KEY maps to, every node in the ring with its weight and score\n" +
			"(best first), and the nodes left out with their reason. Sticky placement of an\n" +
			"already active conference (see `conf list`) takes precedence over the ring.",
		Args: cobra.ExactArgs(1),
	}
	hbTimeout := lookup.Flags().Duration("heartbeat-timeout", 5*time.Second, "a heartbeat older than this makes a node unhealthy")
	lookup.RunE = func(cmd *cobra.Command, args []string) error { return a.ringLookup(cmd, args[0], *hbTimeout) }
	cmd.AddCommand(lookup)
	return cmd
}

type candidate struct {
	Node   string  `json:"node"`
	Addr   string  `json:"addr"`
	Weight float64 `json:"weight"`
	Score  float64 `json:"score"`
}

type excluded struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

type lookupResult struct {
	Key        string      `json:"key"`
	Node       string      `json:"node,omitempty"`
	Addr       string      `json:"addr,omitempty"`
	Found      bool        `json:"found"`
	Candidates []candidate `json:"candidates"`
	Excluded   []excluded  `json:"excluded"`
	Note       string      `json:"note"`
}

func (a *app) ringLookup(cmd *cobra.Command, key string, hbTimeout time.Duration) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	view, err := a.loadNodes(ctx, hbTimeout)
	if err != nil {
		return err
	}

	res := lookupResult{Key: key, Candidates: []candidate{}, Excluded: []excluded{}, Note: view.note}
	if n, ok := view.snapshot.Lookup(key); ok {
		res.Found, res.Node, res.Addr = true, n.Name, n.Addr
	}
	addr := map[string]string{}
	for _, r := range view.rows {
		addr[r.Name] = r.Addr
	}
	inRing := map[string]bool{}
	for _, s := range view.snapshot.Ring().Scores(key) {
		inRing[s.Name] = true
		res.Candidates = append(res.Candidates, candidate{Node: s.Name, Addr: addr[s.Name], Weight: s.Weight, Score: s.Score})
	}
	sort.SliceStable(res.Candidates, func(i, j int) bool { return res.Candidates[i].Score > res.Candidates[j].Score })
	for _, r := range view.rows {
		switch {
		case !r.Valid:
			res.Excluded = append(res.Excluded, excluded{Node: r.Name, Reason: "invalid: " + r.Error})
		case !inRing[r.Name]:
			reason := r.Reason
			if reason == "" {
				reason = "not in ring"
			}
			res.Excluded = append(res.Excluded, excluded{Node: r.Name, Reason: reason})
		}
	}

	out := cmd.OutOrStdout()
	if a.json {
		if err := printJSON(out, res); err != nil {
			return err
		}
	} else {
		if res.Found {
			fmt.Fprintf(out, "%s -> %s (%s)\n\n", key, res.Node, res.Addr)
		} else {
			fmt.Fprintf(out, "%s -> no node\n\n", key)
		}
		fmt.Fprintln(out, "In the ring (highest score wins):")
		rows := make([][]string, 0, len(res.Candidates))
		for i, c := range res.Candidates {
			mark := " "
			if i == 0 && res.Found && c.Node == res.Node {
				mark = "<- chosen"
			}
			rows = append(rows, []string{c.Node, c.Addr, formatFloat(c.Weight), strconv.FormatFloat(c.Score, 'g', 6, 64), mark})
		}
		if err := printTable(out, []string{"NODE", "ADDR", "WEIGHT", "SCORE", ""}, rows); err != nil {
			return err
		}
		if len(res.Excluded) > 0 {
			fmt.Fprintln(out, "\nExcluded:")
			rows = rows[:0]
			for _, e := range res.Excluded {
				rows = append(rows, []string{e.Node, e.Reason})
			}
			if err := printTable(out, []string{"NODE", "REASON"}, rows); err != nil {
				return err
			}
		}
		fmt.Fprintf(out, "\nNote: %s.\n", view.note)
	}
	if !res.Found {
		return fmt.Errorf("lookup %q: %w", key, errNoNode)
	}
	return nil
}
