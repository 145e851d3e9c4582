package policy

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseSettings(t *testing.T) {
	base := Settings{GuestsOnly: 90 * time.Second, Backstop: 600 * time.Second}
	cases := []struct {
		name   string
		fields map[string]string
		want   Settings
		bad    []string // fields reported bad
		isErr  error
	}{
		{"good values", map[string]string{FieldGuestsOnly: "120", FieldBackstop: " 60 "},
			Settings{120 * time.Second, 60 * time.Second}, nil, nil},
		{"bounds", map[string]string{FieldGuestsOnly: "0", FieldBackstop: "86400"},
			Settings{0, 86400 * time.Second}, nil, nil},
		{"backstop 0 turns it off", map[string]string{FieldBackstop: "0"},
			Settings{90 * time.Second, 0}, nil, nil},
		{"absent fields keep base", map[string]string{"media_timeout": "30", "hosts": "a@b"},
			base, nil, nil},
		{"abc keeps base", map[string]string{FieldGuestsOnly: "abc"},
			base, []string{FieldGuestsOnly}, ErrNotSeconds},
		{"fraction keeps base", map[string]string{FieldGuestsOnly: "1.5"},
			base, []string{FieldGuestsOnly}, ErrNotSeconds},
		{"-1 keeps base", map[string]string{FieldGuestsOnly: "-1"},
			base, []string{FieldGuestsOnly}, ErrOutOfRange},
		{"86401 keeps base", map[string]string{FieldGuestsOnly: "86401", FieldBackstop: "86401"},
			base, []string{FieldGuestsOnly, FieldBackstop}, ErrOutOfRange},
		{"backstop 30 is neither 0 nor 60..86400", map[string]string{FieldBackstop: "30"},
			base, []string{FieldBackstop}, ErrOutOfRange},
		{"one bad field does not spoil the other", map[string]string{FieldGuestsOnly: "10", FieldBackstop: "x"},
			Settings{10 * time.Second, 600 * time.Second}, []string{FieldBackstop}, ErrNotSeconds},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := ParseSettings(base, tc.fields)
			if got != tc.want {
				t.Errorf("settings = %+v, want %+v", got, tc.want)
			}
			if len(errs) != len(tc.bad) {
				t.Fatalf("errors = %v, want fields %v", errs, tc.bad)
			}
			for i, e := range errs {
				if e.Field != tc.bad[i] || !errors.Is(e, tc.isErr) {
					t.Errorf("error %d = %v, want field %s wrapping %v", i, e, tc.bad[i], tc.isErr)
				}
				if msg := e.Error(); !strings.Contains(msg, e.Field) || !strings.Contains(msg, tc.fields[e.Field]) {
					t.Errorf("error %q does not name field and value", msg)
				}
			}
		})
	}
}

func TestParseSettings_PerConferenceOverridesGlobal(t *testing.T) {
	global, errs := ParseSettings(DefaultSettings(), map[string]string{FieldGuestsOnly: "300", FieldBackstop: "3600", "retry_after": "30"})
	if errs != nil || global != (Settings{300 * time.Second, 3600 * time.Second}) {
		t.Fatalf("global = %+v, %v", global, errs)
	}
	conf, errs := ParseSettings(global, map[string]string{FieldGuestsOnly: "0", FieldBackstop: "5", "hosts": "alice@example.com"})
	if len(errs) != 1 || errs[0].Field != FieldBackstop {
		t.Fatalf("errors = %v, want only %s", errs, FieldBackstop)
	}
	if want := (Settings{0, 3600 * time.Second}); conf != want {
		t.Errorf("per-conference = %+v, want %+v (override wins, bad field keeps global)", conf, want)
	}
}

func TestDefaultSettings(t *testing.T) {
	if got := DefaultSettings(); got != (Settings{GuestsOnly: 60 * time.Second}) {
		t.Errorf("defaults = %+v, want guests-only 60 s, backstop off", got)
	}
}

func FuzzParseSettings(f *testing.F) {
	for _, p := range [][2]string{{"60", "0"}, {"abc", "30"}, {"-1", "86401"}, {" 120 ", "+60"}, {"", "9999999999999999999999"}} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, g, b string) {
		base := DefaultSettings()
		s, errs := ParseSettings(base, map[string]string{FieldGuestsOnly: g, FieldBackstop: b})
		if s.GuestsOnly < 0 || s.GuestsOnly > 86400*time.Second {
			t.Fatalf("guests-only %v out of range", s.GuestsOnly)
		}
		if s.Backstop != 0 && (s.Backstop < 60*time.Second || s.Backstop > 86400*time.Second) {
			t.Fatalf("backstop %v out of range", s.Backstop)
		}
		for _, e := range errs {
			if e.Field == FieldGuestsOnly && s.GuestsOnly != base.GuestsOnly ||
				e.Field == FieldBackstop && s.Backstop != base.Backstop {
				t.Fatalf("bad %s did not keep base: %+v", e.Field, s)
			}
		}
	})
}
