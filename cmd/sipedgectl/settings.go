package main

import (
	"context"
	"sort"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
)

// settings are the values of sipedge:settings in force (SPEC §2), parsed
// by the contract package the way every sipedge instance parses them: a
// field that is absent or bad takes its default. (An instance keeps its
// last good value instead; this CLI has no history, so it shows the
// default and says the field is bad.)
type settings = contract.Settings

// settingRow is one field of sipedge:settings as `status` shows it.
type settingRow struct {
	Name   string  `json:"name"`
	Value  string  `json:"value"`  // in force
	Raw    *string `json:"raw"`    // as stored; nil when absent
	Source string  `json:"source"` // default, redis, invalid or "not checked"
	Error  string  `json:"error,omitempty"`
}

func drainAction(bye bool) string { return contract.DrainAction(bye) }

// parseSettings reads a sipedge:settings hash leniently: every bad field is
// reported in its row and the default is used. Fields the contract does
// not define are listed as stored.
func parseSettings(k keys.Keys, fields map[string]string) (settings, []settingRow) {
	def := contract.DefaultSettings()
	s, errs := contract.ParseSettings(k, def, def, fields)
	bad := make(map[string]string, len(errs))
	for _, e := range errs {
		bad[e.Field] = e.Reason
	}
	rows := make([]settingRow, 0, len(contract.SettingFields)+len(fields))
	for _, f := range contract.SettingFields {
		r := settingRow{Name: f.Name, Source: "default", Value: f.Show(s)}
		if v, ok := fields[f.Name]; ok {
			r.Raw = &v
			if reason, isBad := bad[f.Name]; isBad {
				r.Source, r.Error = "invalid", reason
			} else {
				r.Source = "redis"
			}
		}
		rows = append(rows, r)
	}
	var other []string
	for f := range fields {
		if !contract.IsSettingField(f) {
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
	s, rows := parseSettings(a.k, f)
	return s, rows, nil
}
