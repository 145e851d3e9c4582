package contract

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sipedge/sipedge/internal/keys"
)

func TestParseConfCfg(t *testing.T) {
	k := keys.New("sipedge:")
	base := DefaultSettings()
	base.GuestsOnly, base.Backstop = 90*time.Second, 600*time.Second
	with := func(g, b time.Duration) Settings { s := base; s.GuestsOnly, s.Backstop = g, b; return s }
	cases := []struct {
		name   string
		fields map[string]string
		want   Settings
		bad    []string // fields reported bad
		isErr  error
	}{
		{"good values", map[string]string{SettingGuestsOnly: "120", SettingBackstop: " 60 "},
			with(120*time.Second, 60*time.Second), nil, nil},
		{"bounds", map[string]string{SettingGuestsOnly: "0", SettingBackstop: "86400"},
			with(0, 86400*time.Second), nil, nil},
		{"backstop 0 turns it off", map[string]string{SettingBackstop: "0"},
			with(90*time.Second, 0), nil, nil},
		{"absent fields and non-overridable ones keep base", map[string]string{SettingMediaTimeout: "30", SettingRetryAfter: "5", "hosts": "a@b"},
			base, nil, nil},
		{"abc keeps base", map[string]string{SettingGuestsOnly: "abc"},
			base, []string{SettingGuestsOnly}, ErrNotSeconds},
		{"fraction keeps base", map[string]string{SettingGuestsOnly: "1.5"},
			base, []string{SettingGuestsOnly}, ErrNotSeconds},
		{"-1 keeps base", map[string]string{SettingGuestsOnly: "-1"},
			base, []string{SettingGuestsOnly}, ErrOutOfRange},
		{"86401 keeps base", map[string]string{SettingGuestsOnly: "86401", SettingBackstop: "86401"},
			base, []string{SettingGuestsOnly, SettingBackstop}, ErrOutOfRange},
		{"backstop 30 is neither 0 nor 60..86400", map[string]string{SettingBackstop: "30"},
			base, []string{SettingBackstop}, ErrOutOfRange},
		{"one bad field does not spoil the other", map[string]string{SettingGuestsOnly: "10", SettingBackstop: "x"},
			with(10*time.Second, 600*time.Second), []string{SettingBackstop}, ErrNotSeconds},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := ParseConfCfg(k, "c1", base, tc.fields)
			if got != tc.want {
				t.Errorf("settings = %+v, want %+v", got, tc.want)
			}
			if len(errs) != len(tc.bad) {
				t.Fatalf("errors = %v, want fields %v", errs, tc.bad)
			}
			for i, e := range errs {
				if e.Field != tc.bad[i] || !errors.Is(e, tc.isErr) || e.Key != "sipedge:confcfg:c1" {
					t.Errorf("error %d = %v, want field %s of sipedge:confcfg:c1 wrapping %v", i, e, tc.bad[i], tc.isErr)
				}
				if msg := e.Error(); !strings.Contains(msg, e.Field) || !strings.Contains(msg, strings.TrimSpace(tc.fields[e.Field])) {
					t.Errorf("error %q does not name field and value", msg)
				}
			}
		})
	}
}

// A conference's overrides apply over the global settings, not the
// defaults: what it does not set is the global value.
func TestParseConfCfg_OverridesGlobal(t *testing.T) {
	k := keys.New("sipedge:")
	global, errs := ParseSettings(k, DefaultSettings(), DefaultSettings(),
		map[string]string{SettingGuestsOnly: "300", SettingBackstop: "3600", SettingRetryAfter: "30"})
	if errs != nil {
		t.Fatalf("global: %v", errs)
	}
	conf, errs := ParseConfCfg(k, "c1", global, map[string]string{SettingGuestsOnly: "0", SettingBackstop: "5", "hosts": "alice@example.com"})
	if len(errs) != 1 || errs[0].Field != SettingBackstop {
		t.Fatalf("errors = %v, want only %s", errs, SettingBackstop)
	}
	if conf.GuestsOnly != 0 || conf.Backstop != 3600*time.Second {
		t.Errorf("conference settings = %+v, want guests-only 0 and the global backstop 3600 s", conf)
	}
}
