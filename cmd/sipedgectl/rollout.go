package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Phases of one node in a rollout, in order.
const (
	phaseDrain  = "drain"  // maintenance on; waiting for its calls to end
	phaseHook   = "hook"   // in maintenance with no calls; the hook runs
	phaseReturn = "return" // maintenance off; waiting for its slow start to end
	phaseDone   = "done"   // every node went through
)

// rolloutState is the progress kept in <prefix>rollout.
type rolloutState struct {
	Nodes     []string `json:"nodes"`
	Index     int      `json:"index"` // node being worked on
	Phase     string   `json:"phase"`
	Hook      string   `json:"hook,omitempty"`
	StartedMs int64    `json:"started_ms"`
	UpdatedMs int64    `json:"updated_ms"`
}

func newRolloutCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout [NODE...]",
		Short: "Take media nodes one at a time through maintenance, a hook, and back with slow start",
		Long: "rollout upgrades media nodes without dropping a call, one node at a time: it puts\n" +
			"the node into maintenance (no new conferences, calls continue), waits until it has\n" +
			"no calls, runs --hook with SIPEDGE_NODE set (the upgrade; a failing hook stops the\n" +
			"rollout), returns the node to service and waits until it is healthy and its slow\n" +
			"start has ended, then goes on to the next.\n\n" +
			"Progress is kept in Redis (<prefix>rollout): after an interruption, run the same\n" +
			"command again (or `rollout --resume`) and it continues where it stopped.\n" +
			"`rollout --status` shows it; `rollout --abort` forgets it (nodes stay as they are).",
	}
	f := cmd.Flags()
	hook := f.String("hook", "", "command run (sh -c) for each node once it is drained; SIPEDGE_NODE names it")
	resume := f.Bool("resume", false, "continue the stored rollout (no NODE needed)")
	status := f.Bool("status", false, "show the stored rollout and exit")
	abort := f.Bool("abort", false, "forget the stored rollout and exit")
	restart := f.Bool("restart", false, "start over even if another rollout is stored")
	interval := f.Duration("interval", time.Second, "how often to read node states")
	phaseLimit := f.Duration("phase-timeout", 0, "give up when one phase of one node lasts longer (0: no limit)")
	hb := f.Duration("heartbeat-timeout", 5*time.Second, "a heartbeat older than this makes a node dead")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if *interval <= 0 {
			return fmt.Errorf("--interval %v must be > 0", *interval)
		}
		r := &roller{a: a, cmd: cmd, interval: *interval, limit: *phaseLimit, hbTimeout: *hb}
		switch {
		case *status:
			return r.showStatus()
		case *abort:
			return r.abort()
		}
		st, err := r.plan(args, *hook, *resume, *restart)
		if err != nil {
			return err
		}
		return r.run(st)
	}
	return cmd
}

type roller struct {
	a         *app
	cmd       *cobra.Command
	interval  time.Duration
	limit     time.Duration
	hbTimeout time.Duration
}

func (r *roller) ctx() (context.Context, context.CancelFunc) { return r.a.ctx(r.cmd) }

func (r *roller) load() (rolloutState, bool, error) {
	ctx, cancel := r.ctx()
	defer cancel()
	f, err := r.a.rdb.HGetAll(ctx, r.a.k.Rollout()).Result()
	if err != nil {
		return rolloutState{}, false, redisErr("read rollout", err)
	}
	if len(f) == 0 {
		return rolloutState{}, false, nil
	}
	st := rolloutState{Phase: f["phase"], Hook: f["hook"]}
	if f["nodes"] != "" {
		st.Nodes = strings.Split(f["nodes"], ",")
	}
	var e1, e2, e3 error
	st.Index, e1 = strconv.Atoi(f["index"])
	st.StartedMs, e2 = strconv.ParseInt(f["started_ms"], 10, 64)
	st.UpdatedMs, e3 = strconv.ParseInt(f["updated_ms"], 10, 64)
	if err := errors.Join(e1, e2, e3); err != nil || len(st.Nodes) == 0 || st.Index < 0 || st.Index > len(st.Nodes) ||
		!slices.Contains([]string{phaseDrain, phaseHook, phaseReturn, phaseDone}, st.Phase) {
		return rolloutState{}, false, fmt.Errorf("stored rollout %s is not valid (%v): `sipedgectl rollout --abort` clears it", r.a.k.Rollout(), f)
	}
	return st, true, nil
}

func (r *roller) save(st *rolloutState) error {
	st.UpdatedMs = r.a.now().UnixMilli()
	ctx, cancel := r.ctx()
	defer cancel()
	err := r.a.rdb.HSet(ctx, r.a.k.Rollout(), "nodes", strings.Join(st.Nodes, ","), "index", st.Index,
		"phase", st.Phase, "hook", st.Hook, "started_ms", st.StartedMs, "updated_ms", st.UpdatedMs).Err()
	if err != nil {
		return redisErr("save rollout progress", err)
	}
	return nil
}

// plan starts a rollout of nodes, or resumes the stored one.
func (r *roller) plan(nodes []string, hook string, resume, restart bool) (rolloutState, error) {
	stored, ok, err := r.load()
	if err != nil && !restart {
		return rolloutState{}, err
	}
	if resume {
		if !ok {
			return rolloutState{}, errors.New("rollout --resume: no rollout stored")
		}
		if len(nodes) > 0 && !slices.Equal(nodes, stored.Nodes) {
			return rolloutState{}, fmt.Errorf("rollout --resume: stored rollout is of %s, not %s",
				strings.Join(stored.Nodes, " "), strings.Join(nodes, " "))
		}
		return stored, nil
	}
	if len(nodes) == 0 {
		return rolloutState{}, errors.New("rollout: missing NODE (the media nodes to upgrade, in order), or --resume")
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		if seen[n] {
			return rolloutState{}, fmt.Errorf("rollout: node %q named twice", n)
		}
		seen[n] = true
		ctx, cancel := r.ctx()
		exists, err := r.a.nodeExists(ctx, n)
		cancel()
		if err != nil {
			return rolloutState{}, err
		}
		if !exists {
			return rolloutState{}, fmt.Errorf("rollout: node %q: %w", n, errUnknownNode)
		}
	}
	if ok && !restart && stored.Phase != phaseDone {
		if slices.Equal(nodes, stored.Nodes) {
			r.printf("resuming the stored rollout at node %s (%d/%d), phase %s",
				stored.Nodes[stored.Index], stored.Index+1, len(stored.Nodes), stored.Phase)
			if hook != "" {
				stored.Hook = hook
			}
			return stored, nil
		}
		return rolloutState{}, fmt.Errorf("rollout of %s is under way (node %d/%d, phase %s): --resume it, or --restart, or --abort",
			strings.Join(stored.Nodes, " "), stored.Index+1, len(stored.Nodes), stored.Phase)
	}
	now := r.a.now().UnixMilli()
	st := rolloutState{Nodes: nodes, Phase: phaseDrain, Hook: hook, StartedMs: now}
	return st, r.save(&st)
}

// run drives each node from the stored phase to the end.
func (r *roller) run(st rolloutState) error {
	for st.Index < len(st.Nodes) && st.Phase != phaseDone {
		node := st.Nodes[st.Index]
		var err error
		switch st.Phase {
		case phaseDrain:
			err = r.drain(node, st)
			st.Phase = phaseHook
		case phaseHook:
			err = r.runHook(node, st)
			st.Phase = phaseReturn
		case phaseReturn:
			err = r.back(node, st)
			st.Phase = phaseDrain
			st.Index++
			if st.Index == len(st.Nodes) {
				st.Phase = phaseDone
			}
		}
		if err != nil {
			return fmt.Errorf("rollout stopped at node %s (%d/%d): %w; fix it and run `sipedgectl rollout --resume`",
				node, st.Index+1, len(st.Nodes), err)
		}
		if err := r.save(&st); err != nil {
			return err
		}
	}
	r.printf("rollout done: %s, in %s", strings.Join(st.Nodes, " "),
		r.a.now().Sub(time.UnixMilli(st.StartedMs)).Round(time.Second))
	return nil
}

func (r *roller) drain(node string, st rolloutState) error {
	if err := r.a.nodesMaintenance(r.cmd, node, true); err != nil {
		return err
	}
	return r.waitFor(node, st, "drained", func() (bool, string, error) {
		ctx, cancel := r.ctx()
		defer cancel()
		s, err := r.a.nodeDrainSample(ctx, node, r.hbTimeout)
		if err != nil {
			return false, "", err
		}
		return s.Done, describe(s, r.a.now()), nil
	})
}

func (r *roller) runHook(node string, st rolloutState) error {
	if st.Hook == "" {
		return nil
	}
	r.printf("[%d/%d] %s: running hook: %s", st.Index+1, len(st.Nodes), node, st.Hook)
	c := exec.CommandContext(r.cmd.Context(), "sh", "-c", st.Hook)
	c.Env = append(os.Environ(), "SIPEDGE_NODE="+node)
	c.Stdout, c.Stderr = r.cmd.OutOrStdout(), r.cmd.ErrOrStderr()
	if err := c.Run(); err != nil {
		return fmt.Errorf("hook %q: %w", st.Hook, err)
	}
	return nil
}

func (r *roller) back(node string, st rolloutState) error {
	if err := r.a.nodesMaintenance(r.cmd, node, false); err != nil {
		return err
	}
	return r.waitFor(node, st, "back at full weight", func() (bool, string, error) {
		ctx, cancel := r.ctx()
		defer cancel()
		view, err := r.a.loadNodes(ctx, r.hbTimeout)
		if err != nil {
			return false, "", err
		}
		for _, row := range view.rows {
			if row.Name != node {
				continue
			}
			switch {
			case !row.Valid:
				return false, "invalid: " + row.Error, nil
			case !row.InService:
				return false, "not in service: " + row.OutReason, nil
			case !row.Healthy:
				return false, "not healthy yet: " + row.Reason, nil
			case row.rampLeft > 0:
				pct := 0.0
				if row.Weight != nil && *row.Weight > 0 {
					pct = 100 * row.EffectiveWeight / *row.Weight
				}
				// Coarse steps, so the progress prints a line per tenth.
				return false, fmt.Sprintf("slow start, at %d%% of its weight", int(pct/10)*10), nil
			}
			return true, "in service at full weight", nil
		}
		return false, "", fmt.Errorf("node %q: %w", node, errUnknownNode)
	})
}

// waitFor polls check until it is done, printing each new state.
func (r *roller) waitFor(node string, st rolloutState, goal string, check func() (bool, string, error)) error {
	start, last := r.a.now(), ""
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		done, what, err := check()
		if errors.Is(err, errUnknownNode) {
			return err // removed meanwhile: nothing to wait for
		}
		if err != nil { // Redis unreachable for a moment, or the hash being fixed
			what = err.Error() + "; retrying"
		}
		if what != last {
			r.printf("[%d/%d] %s: %s", st.Index+1, len(st.Nodes), node, what)
			last = what
		}
		if done {
			r.printf("[%d/%d] %s: %s after %s", st.Index+1, len(st.Nodes), node, goal, r.a.now().Sub(start).Round(time.Second))
			return nil
		}
		if r.limit > 0 && r.a.now().Sub(start) > r.limit {
			return fmt.Errorf("not %s within --phase-timeout %s (%s)", goal, r.limit, what)
		}
		select {
		case <-r.cmd.Context().Done():
			return fmt.Errorf("interrupted while waiting until %s: %w", goal, r.cmd.Context().Err())
		case <-t.C:
		}
	}
}

func (r *roller) showStatus() error {
	st, ok, err := r.load()
	if err != nil {
		return err
	}
	if r.a.json {
		return printJSON(r.cmd.OutOrStdout(), map[string]any{"stored": ok, "rollout": st})
	}
	if !ok {
		r.printf("no rollout stored")
		return nil
	}
	cur := "-"
	if st.Index < len(st.Nodes) {
		cur = st.Nodes[st.Index]
	}
	r.printf("rollout of %s: node %s (%d/%d), phase %s, started %s, last progress %s",
		strings.Join(st.Nodes, " "), cur, min(st.Index+1, len(st.Nodes)), len(st.Nodes), st.Phase,
		time.UnixMilli(st.StartedMs).UTC().Format(time.RFC3339), time.UnixMilli(st.UpdatedMs).UTC().Format(time.RFC3339))
	return nil
}

func (r *roller) abort() error {
	ctx, cancel := r.ctx()
	defer cancel()
	n, err := r.a.rdb.Del(ctx, r.a.k.Rollout()).Result()
	if err != nil {
		return redisErr("forget rollout", err)
	}
	if n == 0 {
		r.printf("no rollout stored")
	} else {
		r.printf("rollout forgotten; nodes keep their current maintenance flags")
	}
	return nil
}

func (r *roller) printf(format string, args ...any) {
	if r.a.json {
		return // --json: only --status prints, as one document
	}
	fmt.Fprintf(r.cmd.OutOrStdout(), "%s "+format+"\n", append([]any{r.a.now().UTC().Format("15:04:05")}, args...)...)
}
