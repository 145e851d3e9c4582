package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
)

// errUnknownConf is returned for a conference id with no conference hash.
var errUnknownConf = errors.New("no active conference with that id")

func newConfShowCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one conference: placement, timers and its participants with their media",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.confShow(cmd, args[0]) },
	}
}

// participant is one value of the participants hash, as sipedge writes it.
type participant = contract.Participant

// participantRow is a participant as `conf show` reports it. A value that
// is not valid JSON keeps only its Call-ID, the error and the raw value.
// Packets, bytes, lost and last RTP come from the anchoring instance's
// media_stats hash (rewritten every second) when it has the call, else
// from the record (as of the participant's last state change);
// counters_age_ms says how old the per-second counters are (null: none).
type participantRow struct {
	participant
	LastRTPAgeMs  *int64 `json:"last_rtp_age_ms"`
	CountersAgeMs *int64 `json:"counters_age_ms"`
	Error         string `json:"error,omitempty"`
	Raw           string `json:"raw,omitempty"`
}

// confDetail is the conference part of `conf show`.
type confDetail struct {
	confRow
	NoHostSinceMs  *int64 `json:"no_host_since_unix_ms"`
	OneLeftSinceMs *int64 `json:"one_left_since_unix_ms"`
	Ended          string `json:"ended,omitempty"`
}

func (a *app) confShow(cmd *cobra.Command, id string) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	now := a.now()
	r, found, err := a.readConf(ctx, id, now)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("conf show %q: %w (no %s)", id, errUnknownConf, a.k.Conf(id))
	}
	values, err := a.rdb.HGetAll(ctx, a.k.Participants(id)).Result()
	if err != nil {
		return redisErr("read "+a.k.Participants(id), err)
	}
	d := confDetail{confRow: r, Ended: r.Fields["ended"]}
	if t, ok := parseUnixMs(r.Fields["no_host_since"]); ok {
		d.NoHostSinceMs = unixMs(t)
	}
	if t, ok := parseUnixMs(r.Fields["one_left_since"]); ok {
		d.OneLeftSinceMs = unixMs(t)
	}
	rows := participantRows(a.k, id, values, now)
	if err := a.overlayCounters(ctx, rows, now); err != nil {
		return err
	}

	out := cmd.OutOrStdout()
	if a.json {
		return printJSON(out, map[string]any{"conference": d, "participants": rows})
	}
	printConfDetail(out, d, now)
	if len(rows) == 0 {
		_, err := fmt.Fprintln(out, "\nno participants")
		return err
	}
	fmt.Fprintln(out)
	table := make([][]string, 0, len(rows))
	for _, p := range rows {
		if p.Error != "" {
			table = append(table, []string{p.CallID, "error: " + p.Error, "", "", "", "", "", "", ""})
			continue
		}
		present := "no"
		switch {
		case !p.Media:
			present = "no media"
		case p.Present:
			present = "yes"
		}
		lastRTP := "never"
		if p.LastRTPMs > 0 {
			lastRTP = age(now, time.UnixMilli(p.LastRTPMs))
		}
		table = append(table, []string{p.CallID, p.From, p.Role, p.Kind, p.KeepAlive, present,
			strconv.FormatUint(p.Packets, 10), strconv.FormatUint(p.Lost, 10), lastRTP})
	}
	return printTable(out, []string{"CALL-ID", "FROM", "ROLE", "KIND", "KEEP-ALIVE", "PRESENT", "PACKETS", "LOST", "LAST RTP"}, table)
}

// participantRows decodes the participants hash, sorted by join time then
// Call-ID, undecodable values last.
func participantRows(k keys.Keys, conf string, values map[string]string, now time.Time) []participantRow {
	rows := make([]participantRow, 0, len(values))
	for callID, v := range values {
		var r participantRow
		var bad *contract.FieldError
		if r.participant, bad = contract.ParseParticipant(k, conf, callID, v); bad != nil {
			r = participantRow{Error: bad.Reason, Raw: v}
		} else if r.LastRTPMs > 0 {
			r.LastRTPAgeMs = ageMs(now, time.UnixMilli(r.LastRTPMs))
		}
		r.CallID = callID // the hash field is the authority
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if (a.Error == "") != (b.Error == "") {
			return a.Error == ""
		}
		if a.JoinedMs != b.JoinedMs {
			return a.JoinedMs < b.JoinedMs
		}
		return a.CallID < b.CallID
	})
	return rows
}

// overlayCounters reads the per-second packet counters of the rows from
// each anchoring instance's media_stats hash: one HMGET per instance.
func (a *app) overlayCounters(ctx context.Context, rows []participantRow, now time.Time) error {
	byInstance := map[string][]int{}
	for i, r := range rows {
		if r.Error == "" && r.Instance != "" {
			byInstance[r.Instance] = append(byInstance[r.Instance], i)
		}
	}
	for inst, idx := range byInstance {
		fields := make([]string, len(idx))
		for j, i := range idx {
			fields[j] = rows[i].CallID
		}
		vals, err := a.rdb.HMGet(ctx, a.k.MediaStats(inst), fields...).Result()
		if err != nil {
			return redisErr("read "+a.k.MediaStats(inst), err)
		}
		for j, v := range vals {
			raw, ok := v.(string)
			if !ok {
				continue
			}
			c, bad := contract.ParseMediaCounters(a.k, inst, fields[j], raw)
			if bad != nil {
				continue
			}
			r := &rows[idx[j]]
			r.Packets, r.Bytes, r.Lost, r.LastRTPMs = c.Packets, c.Bytes, c.Lost, c.LastRTPMs
			r.LastRTPAgeMs = nil
			if c.LastRTPMs > 0 {
				r.LastRTPAgeMs = ageMs(now, time.UnixMilli(c.LastRTPMs))
			}
			if c.AtMs > 0 {
				r.CountersAgeMs = ageMs(now, time.UnixMilli(c.AtMs))
			}
		}
	}
	return nil
}

func printConfDetail(w io.Writer, d confDetail, now time.Time) {
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "  %-15s %s\n", k, v)
		}
	}
	when := func(ms *int64, raw string) string {
		if ms == nil {
			return raw
		}
		t := time.UnixMilli(*ms)
		return t.UTC().Format(time.RFC3339) + " (" + age(now, t) + ")"
	}
	fmt.Fprintf(w, "conference %s\n", d.ID)
	line("node", d.Node)
	line("started", when(d.StartedMs, d.Fields["started"]))
	line("dialogs", d.Fields["dialogs"])
	line("instance", d.Instance)
	line("no host since", when(d.NoHostSinceMs, d.Fields["no_host_since"]))
	line("one left since", when(d.OneLeftSinceMs, d.Fields["one_left_since"]))
	line("ended", d.Ended)
	line("end reason", d.Fields["end_reason"])
	if d.TTLMs != nil {
		line("ttl", roundDur(d.ttl).String())
	}
}
