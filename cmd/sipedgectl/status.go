package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newStatusCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "One screen: instances, nodes with state, load, calls and weight ramp, conferences, settings",
		Args:  cobra.NoArgs,
	}
	hb := cmd.Flags().Duration("heartbeat-timeout", 5*time.Second, "a heartbeat older than this makes a node or instance dead")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return a.status(cmd, *hb) }
	return cmd
}

// statusInstance is an instance row with the profiles that deservice it.
type statusInstance struct {
	instanceRow
	Exception    bool     `json:"exception"`
	DeservicedBy []string `json:"deserviced_by"` // profiles listing its name or server
}

func (a *app) status(cmd *cobra.Command, hbTimeout time.Duration) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	view, err := a.loadNodes(ctx, hbTimeout)
	if err != nil {
		return err
	}
	insts, err := a.loadInstances(ctx, hbTimeout)
	if err != nil {
		return err
	}
	exc, err := a.rdb.SMembers(ctx, a.k.Exceptions()).Result()
	if err != nil {
		return redisErr("read exceptions", err)
	}
	confs, err := a.scanConfKeys(ctx)
	if err != nil {
		return redisErr("scan conferences", err)
	}
	by := deservicedBy(view.policy.profiles)
	rows := make([]statusInstance, 0, len(insts))
	for _, in := range insts {
		ids := slices.Clone(by[in.Name])
		if in.Server != "" {
			for _, id := range by[in.Server] {
				if !slices.Contains(ids, id) {
					ids = append(ids, id)
				}
			}
		}
		slices.Sort(ids)
		rows = append(rows, statusInstance{instanceRow: in, Exception: slices.Contains(exc, in.Name), DeservicedBy: ids})
	}
	deservice := []profileRow{}
	for _, p := range view.policy.profiles {
		if p.Deservice || !p.Valid {
			deservice = append(deservice, p)
		}
	}

	out := cmd.OutOrStdout()
	if a.json {
		return printJSON(out, map[string]any{
			"instances":            rows,
			"nodes":                view.rows,
			"conferences":          map[string]any{"active": len(confs)},
			"settings":             view.policy.settingRows,
			"profiles":             view.policy.profiles,
			"exceptions":           exc,
			"bad_node_calls":       view.badCalls,
			"heartbeat_timeout_ms": hbTimeout.Milliseconds(),
			"note":                 view.note,
		})
	}
	now := a.now()
	w := &sectionWriter{w: out}
	w.section("INSTANCES", []string{"NAME", "SITE", "SERVER", "STATE", "DIALOGS", "ALIVE", "SERVICE"}, instanceTable(rows, now))
	w.section("NODES", []string{"NAME", "SITE", "SERVER", "STATE", "REASON", "LOAD", "CALLS", "WEIGHT", "HEALTH"},
		nodeTable(view, now))
	for node, v := range view.badCalls {
		w.line(fmt.Sprintf("warning: %s field %q: %q is not a count of calls; counted as 0", a.k.NodeCalls(), node, v))
	}
	w.line(fmt.Sprintf("CONFERENCES  %d active", len(confs)))
	settingTable := make([][]string, 0, len(view.policy.settingRows))
	for _, r := range view.policy.settingRows {
		src := r.Source
		if r.Error != "" {
			src = "invalid (" + r.Error + "): default used"
		}
		settingTable = append(settingTable, []string{r.Name, r.Value, src})
	}
	w.section("SETTINGS", []string{"NAME", "VALUE", "SOURCE"}, settingTable)
	if len(deservice) > 0 {
		table := make([][]string, 0, len(deservice))
		for _, p := range deservice {
			status := p.Status
			if !p.Valid {
				status = "invalid: " + p.Error
			}
			table = append(table, []string{p.ID, p.Name, status, strings.Join(p.Servers, ",")})
		}
		w.section("DESERVICE PROFILES", []string{"ID", "NAME", "STATUS", "SERVERS"}, table)
	}
	if len(exc) > 0 {
		slices.Sort(exc)
		w.line("EXCEPTIONS  " + strings.Join(exc, ", "))
	}
	w.line("Note: " + view.note + ".")
	return w.err
}

func instanceTable(rows []statusInstance, now time.Time) [][]string {
	table := make([][]string, 0, len(rows))
	for _, r := range rows {
		dialogs := ""
		if r.Dialogs != nil {
			dialogs = strconv.FormatInt(*r.Dialogs, 10)
		}
		alive := "no (" + age(now, r.heartbeat) + ")"
		if r.Alive {
			alive = "yes"
		}
		table = append(table, []string{r.Name, r.Site, r.Server, r.State, dialogs, alive, instanceService(r)})
	}
	return table
}

// instanceService says whether an instance is in service, as it reports
// itself, and which profiles deservice it.
func instanceService(r statusInstance) string {
	var parts []string
	switch {
	case r.Deserviced != nil && *r.Deserviced:
		parts = append(parts, "deserviced")
	case r.Deserviced == nil && r.Fields["deserviced"] != "":
		parts = append(parts, "deserviced invalid: "+r.Fields["deserviced"])
	case len(r.DeservicedBy) > 0:
		parts = append(parts, "deservice pending")
	default:
		parts = append(parts, "in service")
	}
	if len(r.DeservicedBy) > 0 {
		parts[0] += " by " + strings.Join(r.DeservicedBy, ",")
	}
	if r.HeldBack != nil && *r.HeldBack {
		parts = append(parts, "held back")
	}
	if r.Exception {
		parts = append(parts, "exception")
	}
	return strings.Join(parts, ", ")
}

func nodeTable(view nodeView, now time.Time) [][]string {
	table := make([][]string, 0, len(view.rows))
	for _, r := range view.rows {
		if !r.Valid {
			table = append(table, []string{r.Name, r.Site, r.Server, "invalid", r.Error, "", strconv.Itoa(r.NodeCalls), "", ""})
			continue
		}
		health := "down"
		switch {
		case r.Eligible:
			health = "in ring"
		case r.Healthy:
			health = "up"
		}
		table = append(table, []string{r.Name, r.Site, r.Server, r.State, nodeReason(r, view.policy.settings, now),
			nodeLoad(r), strconv.Itoa(r.NodeCalls), nodeWeight(r), health})
	}
	return table
}

// nodeReason says why a node is out of service or out of the ring, and
// how its drain stands.
func nodeReason(r nodeRow, s settings, now time.Time) string {
	var parts []string
	if r.OutReason != "" {
		parts = append(parts, r.OutReason)
	}
	if r.Reason != "" && r.Reason != r.OutReason {
		parts = append(parts, r.Reason)
	}
	if !r.InService && !r.drainStarted.IsZero() {
		switch {
		case r.DrainExpired:
			parts = append(parts, "drain timeout passed: calls get BYE")
			if !s.DrainBye {
				parts[len(parts)-1] = "drain timeout passed: calls kept (drain_action keep)"
			}
		case r.State == "draining" && s.DrainTimeout > 0:
			if left := r.drainStarted.Add(s.DrainTimeout).Sub(now); left > 0 {
				parts = append(parts, "drain deadline in "+roundSecs(left).String())
			}
		}
	}
	return strings.Join(parts, "; ")
}

// nodeLoad is the reported load, with the node's own when they differ.
func nodeLoad(r nodeRow) string {
	if r.ReportedLoad == nil {
		return ""
	}
	s := pct(*r.ReportedLoad)
	if r.Load != nil && *r.Load != *r.ReportedLoad {
		s += " (node " + pct(*r.Load) + ")"
	}
	return s
}

func pct(f float64) string { return strconv.FormatFloat(f*100, 'f', 0, 64) + "%" }

// nodeWeight is effective/configured weight, with the slow-start ramp.
func nodeWeight(r nodeRow) string {
	w := 0.0
	if r.Weight != nil {
		w = *r.Weight
	}
	eff := strconv.FormatFloat(math.Round(r.EffectiveWeight), 'f', 0, 64)
	if w < 10 {
		eff = strconv.FormatFloat(r.EffectiveWeight, 'f', 1, 64)
		eff = strings.TrimSuffix(eff, ".0")
	}
	s := eff + "/" + formatFloat(w)
	switch {
	case r.KeptActive:
		s += " (kept active)"
	case r.rampLeft > 0:
		s += " (ramping, " + roundSecs(r.rampLeft).String() + " left)"
	case r.InService && r.Eligible && r.EffectiveWeight < w && r.DrainStartedMs != nil:
		s += " (ramp starts when sipedge records the return)"
	}
	return s
}

// sectionWriter prints titled tables separated by blank lines, keeping
// the first error.
type sectionWriter struct {
	w   io.Writer
	n   int
	err error
}

func (s *sectionWriter) sep() {
	if s.n > 0 {
		fmt.Fprintln(s.w)
	}
	s.n++
}

func (s *sectionWriter) section(title string, header []string, rows [][]string) {
	s.sep()
	fmt.Fprintln(s.w, title)
	if len(rows) == 0 {
		fmt.Fprintln(s.w, "  (none)")
		return
	}
	if err := printTable(s.w, header, rows); err != nil && s.err == nil {
		s.err = err
	}
}

func (s *sectionWriter) line(text string) {
	s.sep()
	if _, err := fmt.Fprintln(s.w, text); err != nil && s.err == nil {
		s.err = err
	}
}
