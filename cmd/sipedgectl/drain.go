package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sipedge/sipedge/internal/logging"
)

var (
	// errUnknownTarget is returned when NAME is neither a node nor an instance.
	errUnknownTarget = errors.New("no media node or sipedge instance of that name")
	// errUnknownInstance is returned for an instance that is not registered.
	errUnknownInstance = errors.New("unknown instance")
	// errNotDraining is returned when the target is in normal service.
	errNotDraining = errors.New("not draining")
	// errDrainDeadline is returned when the drain deadline passes with calls left.
	errDrainDeadline = errors.New("drain deadline passed")
	// errWaitTimeout is returned when --timeout passes before the drain completes.
	errWaitTimeout = errors.New("drain did not complete within --timeout")
)

// Drain target kinds.
const (
	kindNode     = "node"
	kindInstance = "instance"
)

func newDrainCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drain [--wait] [--timeout D] NODE|INSTANCE",
		Short: "Show the drain progress of a media node or instance; --wait follows it to the end",
		Long: "Shows how far the drain of a media node (its calls in node_calls) or of a sipedge\n" +
			"instance (its dialogs) has come. Start a drain first: a node with\n" +
			"`nodes maintenance on`, capable=0 or a deservice profile listing its server; an\n" +
			"instance with a deservice profile listing it or its server.\n\n" +
			"With --wait it follows the drain live (a progress bar on a terminal, a line per\n" +
			"change otherwise, JSON lines with --json) and exits 0 when the node reaches\n" +
			"maintenance or the instance is drained, 1 when --timeout or the node's drain\n" +
			"deadline (drain_started + drain_timeout) passes first.",
		Args: cobra.ExactArgs(1),
	}
	f := cmd.Flags()
	wait := f.Bool("wait", false, "follow the drain until it completes, the deadline passes or --timeout")
	// --timeout here limits the wait, not a single Redis call (each still
	// has 5s); it shadows the global flag of that name.
	limit := f.Duration("timeout", 0, "with --wait: give up after this long (0: no limit but the drain deadline)")
	interval := f.Duration("interval", 500*time.Millisecond, "how often to read the drain state")
	kind := f.String("kind", "", "node or instance, when NAME is both")
	hb := f.Duration("heartbeat-timeout", 5*time.Second, "a heartbeat older than this makes a node or instance dead")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if *interval <= 0 {
			return fmt.Errorf("--interval %v must be > 0", *interval)
		}
		if *limit < 0 {
			return fmt.Errorf("--timeout %v must be >= 0", *limit)
		}
		if *kind != "" && *kind != kindNode && *kind != kindInstance {
			return fmt.Errorf("bad --kind %q: want node or instance", *kind)
		}
		a.timeout = 5 * time.Second // the global --timeout is shadowed
		d := &drainer{a: a, name: args[0], kind: *kind, hbTimeout: *hb, interval: *interval, limit: *limit}
		if *wait {
			return d.wait(cmd)
		}
		return d.once(cmd)
	}
	return cmd
}

// drainSample is the drain state of a node or instance at one moment.
type drainSample struct {
	Kind   string    `json:"kind"`
	Name   string    `json:"name"`
	State  string    `json:"state"` // node: normal, draining, maintenance; instance: normal, draining, drained
	Calls  int64     `json:"calls"` // node: its calls in node_calls; instance: its dialogs
	Reason string    `json:"reason,omitempty"`
	Note   string    `json:"note,omitempty"`
	At     time.Time `json:"-"`

	// Done: the drain is complete (node in maintenance, instance drained).
	Done bool `json:"done"`
	// Draining: out of service, or about to be (an instance that a profile
	// deservices but has not yet written draining). False with !Done means
	// there is nothing to wait for.
	Draining bool `json:"draining"`
	// Dead: an instance that stopped sending heartbeats before it drained.
	Dead bool `json:"dead,omitempty"`
	// KeptActive: a node out of service that still takes conferences as
	// one of the last of its site; its drain does not expire meanwhile.
	KeptActive bool `json:"kept_active,omitempty"`

	DrainStarted time.Time `json:"-"` // node: when it went out of service; zero if unknown
	Deadline     time.Time `json:"-"` // node: drain_started + drain_timeout; zero: none
	DrainAction  string    `json:"drain_action,omitempty"`
}

type drainer struct {
	a         *app
	name      string
	kind      string // "", node or instance
	hbTimeout time.Duration
	interval  time.Duration
	limit     time.Duration
}

// resolve decides whether name is a node or an instance.
func (d *drainer) resolve(ctx context.Context) error {
	if d.kind != "" {
		return nil
	}
	node, err := d.a.nodeExists(ctx, d.name)
	if err != nil {
		return err
	}
	inst, err := d.a.instanceExists(ctx, d.name)
	if err != nil {
		return err
	}
	switch {
	case node && inst:
		return fmt.Errorf("%q is both a media node and an instance: say which with --kind node or --kind instance", d.name)
	case node:
		d.kind = kindNode
	case inst:
		d.kind = kindInstance
	default:
		return fmt.Errorf("drain %q: %w", d.name, errUnknownTarget)
	}
	return nil
}

// sample reads the drain state once, within one --timeout of Redis work.
func (d *drainer) sample(parent context.Context) (drainSample, error) {
	ctx, cancel := context.WithTimeout(parent, d.a.timeout)
	defer cancel()
	if d.kind == kindNode {
		return d.a.nodeDrainSample(ctx, d.name, d.hbTimeout)
	}
	return d.a.instanceDrainSample(ctx, d.name, d.hbTimeout)
}

// once prints the drain progress now.
func (d *drainer) once(cmd *cobra.Command) error {
	ctx, cancel := d.a.ctx(cmd)
	defer cancel()
	if err := d.resolve(ctx); err != nil {
		return err
	}
	s, err := d.sample(ctx)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if d.a.json {
		return printJSON(out, sampleDoc(s, s.Calls, time.Time{}, s.At))
	}
	fmt.Fprintln(out, describe(s, s.At))
	if s.Note != "" {
		fmt.Fprintln(out, "  "+s.Note)
	}
	return nil
}

// wait follows the drain until it completes, fails or times out.
func (d *drainer) wait(cmd *cobra.Command) error {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	start := d.a.now()
	{
		rctx, cancel := context.WithTimeout(ctx, d.a.timeout)
		err := d.resolve(rctx)
		cancel()
		if err != nil {
			return err
		}
	}
	s, err := d.sample(ctx)
	if err != nil {
		return err
	}
	if !s.Done && !s.Draining {
		return fmt.Errorf("%s %s is in service (state %s): %w; %s", s.Kind, s.Name, orDash(s.State), errNotDraining, howToDrain(s))
	}

	p := newProgress(cmd.OutOrStdout(), d.a.json, d.interval)
	first := s.Calls
	var giveUp time.Time
	if d.limit > 0 {
		giveUp = start.Add(d.limit)
	}
	var lastErr error
	for {
		now := d.a.now()
		first = max(first, s.Calls) // a kept-active node may take calls
		switch {
		case s.Done:
			p.finish(s, first, start, now, "done", fmt.Sprintf("%s %s drained: state %s after %s",
				s.Kind, s.Name, s.State, roundDur(now.Sub(start))))
			return nil
		case s.Dead:
			p.finish(s, first, start, now, "dead", fmt.Sprintf("%s %s: %s", s.Kind, s.Name, s.Note))
			return fmt.Errorf("%s %s: %w", s.Kind, s.Name, errInstanceDead)
		case !s.Draining:
			p.finish(s, first, start, now, "returned", fmt.Sprintf("%s %s returned to service (state %s) before its drain completed",
				s.Kind, s.Name, orDash(s.State)))
			return fmt.Errorf("%s %s: %w any more", s.Kind, s.Name, errNotDraining)
		case !s.Deadline.IsZero() && !now.Before(s.Deadline) && !s.KeptActive:
			p.finish(s, first, start, now, "deadline", fmt.Sprintf("%s %s: drain deadline passed with %s left%s",
				s.Kind, s.Name, count(s, s.Calls), deadlineAction(s)))
			return fmt.Errorf("%s %s: %w with %s left", s.Kind, s.Name, errDrainDeadline, count(s, s.Calls))
		case !giveUp.IsZero() && !now.Before(giveUp):
			p.finish(s, first, start, now, "timeout", fmt.Sprintf("%s %s: still %s with %s left after --timeout %s",
				s.Kind, s.Name, orDash(s.State), count(s, s.Calls), d.limit))
			return fmt.Errorf("%s %s: %w (%s)", s.Kind, s.Name, errWaitTimeout, d.limit)
		}
		p.update(s, first, start, now, lastErr)

		// Sleep one interval, or less when a limit falls due sooner.
		sleep := d.interval
		deadline := s.Deadline
		if s.KeptActive {
			deadline = time.Time{}
		}
		for _, t := range []time.Time{giveUp, deadline} {
			if !t.IsZero() {
				sleep = min(sleep, max(0, t.Sub(now)))
			}
		}
		timer := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			timer.Stop()
			p.finish(s, first, start, d.a.now(), "interrupted", "interrupted")
			return fmt.Errorf("drain --wait %s: interrupted: %w", d.name, ctx.Err())
		case <-timer.C:
		}
		next, err := d.sample(ctx)
		switch {
		case err == nil:
			s, lastErr = next, nil
		case errors.Is(err, errUnknownNode), errors.Is(err, errUnknownInstance), errors.Is(err, errInvalidNode):
			p.finish(s, first, start, d.a.now(), "gone", err.Error())
			return err
		case ctx.Err() != nil:
			continue // reported at the select
		default:
			lastErr = err // Redis trouble: keep the last sample and retry
		}
	}
}

// howToDrain says how to start a drain of s's target.
func howToDrain(s drainSample) string {
	if s.Kind == kindNode {
		return "start one with: sipedgectl nodes maintenance on " + s.Name
	}
	return "start one with a deservice profile listing it: sipedgectl profiles create/deservice"
}

func deadlineAction(s drainSample) string {
	switch s.DrainAction {
	case "bye":
		return " (drain_action bye: sipedge ends them with BYE now)"
	case "keep":
		return " (drain_action keep: they continue)"
	}
	return ""
}

// describe is one human line about s at now.
func describe(s drainSample, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s, %s left", s.Kind, s.Name, orDash(s.State), count(s, s.Calls))
	if s.Reason != "" {
		fmt.Fprintf(&b, " (%s)", s.Reason)
	}
	if s.Kind == kindNode && s.Draining {
		b.WriteString(", " + deadlineText(s, now))
	}
	return b.String()
}

// count is n calls of a node or n dialogs of an instance, in words.
func count(s drainSample, n int64) string {
	word := "call"
	if s.Kind == kindInstance {
		word = "dialog"
	}
	return plural(n, word)
}

func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.FormatInt(n, 10) + " " + word + "s"
}

// deadlineText says how long until the drain deadline.
func deadlineText(s drainSample, now time.Time) string {
	switch {
	case s.DrainStarted.IsZero():
		return "drain clock not started yet"
	case s.Deadline.IsZero():
		return "no drain deadline (drain_timeout 0)"
	case s.KeptActive:
		return "drain deadline suspended while kept active"
	case now.Before(s.Deadline):
		return "deadline in " + roundDur(s.Deadline.Sub(now)).String()
	default:
		return "deadline passed " + roundDur(now.Sub(s.Deadline)).String() + " ago"
	}
}

// sampleDoc is s as a JSON document.
func sampleDoc(s drainSample, first int64, start, now time.Time) map[string]any {
	doc := map[string]any{
		"kind": s.Kind, "name": s.Name, "state": s.State, "calls": s.Calls, "start_calls": first,
		"done": s.Done, "draining": s.Draining, "time_unix_ms": now.UnixMilli(),
	}
	if s.Reason != "" {
		doc["reason"] = s.Reason
	}
	if s.Note != "" {
		doc["note"] = s.Note
	}
	if !start.IsZero() {
		doc["elapsed_ms"] = now.Sub(start).Milliseconds()
	}
	if s.Kind == kindNode {
		doc["drain_started_unix_ms"] = unixMs(s.DrainStarted)
		doc["deadline_unix_ms"] = unixMs(s.Deadline)
		if !s.Deadline.IsZero() {
			doc["deadline_left_ms"] = s.Deadline.Sub(now).Milliseconds()
		}
		doc["drain_action"] = s.DrainAction
		doc["kept_active"] = s.KeptActive
	} else {
		doc["dead"] = s.Dead
	}
	return doc
}

// progress shows a drain as it goes: a bar redrawn in place on a
// terminal, a line per change (and every few seconds) otherwise, or JSON
// lines.
type progress struct {
	w       io.Writer
	json    bool
	tty     bool
	every   time.Duration // plain lines: at least this often
	lastKey string        // of the last line printed
	lastAt  time.Time
	width   int // of the last bar drawn, to blank it
}

func newProgress(w io.Writer, asJSON bool, interval time.Duration) *progress {
	return &progress{w: w, json: asJSON, tty: !asJSON && logging.IsTerminal(w), every: max(5*time.Second, interval)}
}

func (p *progress) update(s drainSample, first int64, start, now time.Time, redisErr error) {
	if p.tty {
		line := bar(s, first, start, now)
		if redisErr != nil {
			line += "  (redis: " + redisErr.Error() + ")"
		}
		p.redraw(line)
		return
	}
	// Lines: one per change, and one every few seconds to show it is alive.
	key := fmt.Sprint(s.State, s.Calls, s.Reason, s.Note, s.DrainStarted, s.Deadline, redisErr)
	if key == p.lastKey && now.Sub(p.lastAt) < p.every {
		return
	}
	p.lastKey, p.lastAt = key, now
	if p.json {
		doc := sampleDoc(s, first, start, now)
		if redisErr != nil {
			doc["error"] = redisErr.Error()
		}
		p.jsonLine(doc)
		return
	}
	line := describe(s, now)
	if redisErr != nil {
		line += " (redis: " + redisErr.Error() + "; retrying)"
	}
	fmt.Fprintf(p.w, "%s %s, elapsed %s\n", now.Format("15:04:05"), line, roundSecs(now.Sub(start)))
}

func (p *progress) finish(s drainSample, first int64, start, now time.Time, result, msg string) {
	switch {
	case p.json:
		doc := sampleDoc(s, first, start, now)
		doc["result"], doc["message"] = result, msg
		p.jsonLine(doc)
	case p.tty:
		p.redraw(bar(s, first, start, now))
		fmt.Fprintln(p.w)
		fmt.Fprintln(p.w, msg)
	default:
		fmt.Fprintf(p.w, "%s %s\n", now.Format("15:04:05"), msg)
	}
}

func (p *progress) jsonLine(doc map[string]any) {
	b, err := json.Marshal(doc)
	if err != nil {
		return
	}
	p.w.Write(append(b, '\n'))
}

// redraw replaces the current terminal line with line.
func (p *progress) redraw(line string) {
	pad := ""
	if n := len(line); n < p.width {
		pad = strings.Repeat(" ", p.width-n)
	}
	p.width = len(line)
	fmt.Fprint(p.w, "\r"+line+pad)
}

const barWidth = 30

// bar is the progress line: the share of the starting calls gone, calls
// left, elapsed time and time to the deadline.
func bar(s drainSample, first int64, start, now time.Time) string {
	frac := 1.0
	if first > 0 {
		frac = float64(first-s.Calls) / float64(first)
	}
	frac = min(1, max(0, frac))
	filled := int(frac * barWidth)
	if s.Done {
		filled = barWidth
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %-11s [%s%s] %3d%%  %d of %s left  elapsed %s", s.Kind, s.Name, orDash(s.State),
		strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled), int(frac*100),
		s.Calls, count(s, first), roundSecs(now.Sub(start)))
	if s.Kind == kindNode {
		b.WriteString("  " + deadlineText(s, now))
	}
	return b.String()
}

// roundSecs rounds a duration to whole seconds for the progress line.
func roundSecs(d time.Duration) time.Duration { return d.Round(time.Second) }
