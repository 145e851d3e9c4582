package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// settings are the values of sipedge:settings in force (SPEC §2), read the
// way every sipedge instance reads them: a field that is absent or bad
// takes its default. (An instance keeps its last good value instead; this
// CLI has no history, so it shows the default and says the field is bad.)
type settings struct {
	RetryAfter   time.Duration
	DrainTimeout time.Duration // 0: a drain never ends calls
	DrainBye     bool          // at drain timeout: true BYE the calls, false keep them
	SlowStart    time.Duration // 0: a returning node takes its full weight at once
}

func defaultSettings() settings {
	return settings{RetryAfter: 30 * time.Second, DrainTimeout: 7200 * time.Second, DrainBye: true, SlowStart: 60 * time.Second}
}

// settingRow is one field of sipedge:settings as `status` shows it.
type settingRow struct {
	Name   string  `json:"name"`
	Value  string  `json:"value"`  // in force
	Raw    *string `json:"raw"`    // as stored; nil when absent
	Source string  `json:"source"` // default, redis, invalid or "not checked"
	Error  string  `json:"error,omitempty"`
}

type settingDef struct {
	name  string
	apply func(s *settings, v string) error
	show  func(s settings) string
}

func secondsField(name string, hi int, get func(*settings) *time.Duration) settingDef {
	return settingDef{
		name: name,
		apply: func(s *settings, v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("%q is not a whole number of seconds", v)
			}
			if n < 0 || n > hi {
				return fmt.Errorf("%d is out of range 0..%d", n, hi)
			}
			*get(s) = time.Duration(n) * time.Second
			return nil
		},
		show: func(s settings) string {
			d := *get(&s)
			return strconv.FormatInt(int64(d/time.Second), 10) + "s"
		},
	}
}

// settingDefs are the fields of issue 3, in display order.
var settingDefs = []settingDef{
	secondsField("retry_after", 86400, func(s *settings) *time.Duration { return &s.RetryAfter }),
	secondsField("drain_timeout", 604800, func(s *settings) *time.Duration { return &s.DrainTimeout }),
	{
		name: "drain_action",
		apply: func(s *settings, v string) error {
			switch strings.TrimSpace(v) {
			case "bye":
				s.DrainBye = true
			case "keep":
				s.DrainBye = false
			default:
				return fmt.Errorf("%q is not bye or keep", v)
			}
			return nil
		},
		show: func(s settings) string { return drainAction(s.DrainBye) },
	},
	secondsField("slow_start", 3600, func(s *settings) *time.Duration { return &s.SlowStart }),
}

func drainAction(bye bool) string {
	if bye {
		return "bye"
	}
	return "keep"
}

// parseSettings reads a sipedge:settings hash leniently: every bad field is
// reported in its row and the default is used. Fields this CLI does not
// interpret are listed as stored.
func parseSettings(fields map[string]string) (settings, []settingRow) {
	s := defaultSettings()
	rows := make([]settingRow, 0, len(settingDefs)+len(fields))
	known := map[string]bool{}
	for _, d := range settingDefs {
		known[d.name] = true
		r := settingRow{Name: d.name, Source: "default"}
		if v, ok := fields[d.name]; ok {
			r.Raw = &v
			if err := d.apply(&s, v); err != nil {
				r.Source, r.Error = "invalid", err.Error()
			} else {
				r.Source = "redis"
			}
		}
		rows = append(rows, r)
	}
	for i, d := range settingDefs {
		rows[i].Value = d.show(s)
	}
	var other []string
	for f := range fields {
		if !known[f] {
			other = append(other, f)
		}
	}
	sort.Strings(other)
	for _, f := range other {
		v := fields[f]
		rows = append(rows, settingRow{Name: f, Value: v, Raw: &v, Source: "not checked"})
	}
	return s, rows
}

// loadSettings reads sipedge:settings.
func (a *app) loadSettings(ctx context.Context) (settings, []settingRow, error) {
	f, err := a.rdb.HGetAll(ctx, a.k.Settings()).Result()
	if err != nil {
		return settings{}, nil, redisErr("read settings", err)
	}
	s, rows := parseSettings(f)
	return s, rows, nil
}
