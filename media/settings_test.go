package media

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/media/policy"
)

func TestParseSettings(t *testing.T) {
	base := Settings{MediaTimeout: 60 * time.Second, Policy: policy.Settings{GuestsOnly: 60 * time.Second}}
	with := func(f func(*Settings)) Settings {
		s := base
		f(&s)
		return s
	}
	tests := []struct {
		name    string
		fields  map[string]string
		want    Settings
		wantErr map[string]error // field -> sentinel
	}{
		{"no fields keep the base", nil, base, nil},
		{"media_timeout in seconds", map[string]string{"media_timeout": "30"},
			with(func(s *Settings) { s.MediaTimeout = 30 * time.Second }), nil},
		{"media_timeout trimmed", map[string]string{"media_timeout": " 45 "},
			with(func(s *Settings) { s.MediaTimeout = 45 * time.Second }), nil},
		{"media_timeout 1 is the minimum", map[string]string{"media_timeout": "1"},
			with(func(s *Settings) { s.MediaTimeout = time.Second }), nil},
		{"media_timeout 86400 is the maximum", map[string]string{"media_timeout": "86400"},
			with(func(s *Settings) { s.MediaTimeout = 86400 * time.Second }), nil},
		{"media_timeout abc is not seconds", map[string]string{"media_timeout": "abc"},
			base, map[string]error{"media_timeout": contract.ErrNotSeconds}},
		{"media_timeout 1.5 is not seconds", map[string]string{"media_timeout": "1.5"},
			base, map[string]error{"media_timeout": contract.ErrNotSeconds}},
		{"media_timeout 0 is out of range", map[string]string{"media_timeout": "0"},
			base, map[string]error{"media_timeout": contract.ErrOutOfRange}},
		{"media_timeout 86401 is out of range", map[string]string{"media_timeout": "86401"},
			base, map[string]error{"media_timeout": contract.ErrOutOfRange}},
		{"guests_only_timeout goes to the policy", map[string]string{"guests_only_timeout": "90"},
			with(func(s *Settings) { s.Policy.GuestsOnly = 90 * time.Second }), nil},
		{"guests_only_timeout 0 ends at once", map[string]string{"guests_only_timeout": "0"},
			with(func(s *Settings) { s.Policy.GuestsOnly = 0 }), nil},
		{"last_participant_timeout goes to the policy", map[string]string{"last_participant_timeout": "120"},
			with(func(s *Settings) { s.Policy.Backstop = 120 * time.Second }), nil},
		{"last_participant_timeout 30 is out of the policy's range", map[string]string{"last_participant_timeout": "30"},
			base, map[string]error{"last_participant_timeout": contract.ErrOutOfRange}},
		{"bad fields are all reported, good ones applied",
			map[string]string{"media_timeout": "x", "guests_only_timeout": "100000", "last_participant_timeout": "600"},
			with(func(s *Settings) { s.Policy.Backstop = 600 * time.Second }),
			map[string]error{"media_timeout": contract.ErrNotSeconds, "guests_only_timeout": contract.ErrOutOfRange}},
		{"other fields of sipedge:settings ignored", map[string]string{"retry_after": "abc", "drain_timeout": "7200"},
			base, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := ParseSettings(base, tc.fields)
			if got != tc.want {
				t.Errorf("ParseSettings() = %+v, want %+v", got, tc.want)
			}
			if len(errs) != len(tc.wantErr) {
				t.Fatalf("errors = %v, want %d", errs, len(tc.wantErr))
			}
			for _, e := range errs {
				if want, ok := tc.wantErr[e.Field]; !ok || !errors.Is(e, want) || e.Value != tc.fields[e.Field] {
					t.Errorf("error %v (value %q), want field %s to fail with %v", e, e.Value, e.Field, tc.wantErr[e.Field])
				}
			}
		})
	}
}

// SPEC §2: a bad value in Redis is logged once per change, counted, and the
// last good value (or the default) is kept.
func TestRefreshSettings_KeepsLastGoodValueAndLogsOncePerChange(t *testing.T) {
	e := newEnv(t)
	in := e.instance("A") // defaults: media 60 s, guests-only 60 s, backstop 0
	steps := []struct {
		name     string
		at       time.Duration // after t0
		set      map[string]string
		want     Settings
		wantLogs int // total so far
	}{
		{"a good value applies", 0, map[string]string{"media_timeout": "30"},
			Settings{30 * time.Second, policy.Settings{GuestsOnly: 60 * time.Second}}, 0},
		{"a bad value keeps the last good one, not the default", time.Second, map[string]string{"media_timeout": "abc"},
			Settings{30 * time.Second, policy.Settings{GuestsOnly: 60 * time.Second}}, 1},
		{"the same bad value is not logged again", 2 * time.Second, nil,
			Settings{30 * time.Second, policy.Settings{GuestsOnly: 60 * time.Second}}, 1},
		{"not re-read within a second", 2500 * time.Millisecond, map[string]string{"media_timeout": "45"},
			Settings{30 * time.Second, policy.Settings{GuestsOnly: 60 * time.Second}}, 1},
		{"re-read after a second", 3 * time.Second, nil,
			Settings{45 * time.Second, policy.Settings{GuestsOnly: 60 * time.Second}}, 1},
		{"another bad value is logged", 4 * time.Second, map[string]string{"media_timeout": "0"},
			Settings{45 * time.Second, policy.Settings{GuestsOnly: 60 * time.Second}}, 2},
		{"bad guests_only_timeout keeps the default", 5 * time.Second,
			map[string]string{"media_timeout": "50", "guests_only_timeout": "-1"},
			Settings{50 * time.Second, policy.Settings{GuestsOnly: 60 * time.Second}}, 3},
		{"good guests_only_timeout applies", 6 * time.Second, map[string]string{"guests_only_timeout": "90"},
			Settings{50 * time.Second, policy.Settings{GuestsOnly: 90 * time.Second}}, 3},
		{"bad guests_only_timeout keeps the last good one", 7 * time.Second, map[string]string{"guests_only_timeout": "x"},
			Settings{50 * time.Second, policy.Settings{GuestsOnly: 90 * time.Second}}, 4},
		{"good last_participant_timeout applies", 8 * time.Second,
			map[string]string{"guests_only_timeout": "90", "last_participant_timeout": "120"},
			Settings{50 * time.Second, policy.Settings{GuestsOnly: 90 * time.Second, Backstop: 120 * time.Second}}, 4},
		{"bad last_participant_timeout keeps the last good one", 9 * time.Second,
			map[string]string{"last_participant_timeout": "30"},
			Settings{50 * time.Second, policy.Settings{GuestsOnly: 90 * time.Second, Backstop: 120 * time.Second}}, 5},
	}
	for _, st := range steps {
		for k, v := range st.set {
			e.mr.HSet(e.k.Settings(), k, v)
		}
		in.mg.refreshSettings(context.Background(), t0.Add(st.at))
		if got := in.mg.settings.get(); got != st.want {
			t.Errorf("%s: settings = %+v, want %+v", st.name, got, st.want)
		}
		logs := in.logs.count(logLine{level: "error", msg: "bad setting ignored, last good value kept",
			fields: map[string]string{"key": "sipedge:settings"}})
		if logs != st.wantLogs {
			t.Errorf("%s: bad-setting log lines = %d, want %d", st.name, logs, st.wantLogs)
		}
		if n := testutil.ToFloat64(in.mg.m.badValues); int(n) != st.wantLogs {
			t.Errorf("%s: sipedge_media_bad_values_total = %v, want %d", st.name, n, st.wantLogs)
		}
	}
}

// sipedge:confcfg:<id> overrides the global settings per conference; a bad
// value there is logged once and the global value used.
func TestConfSettings(t *testing.T) {
	const global = 90 * time.Second // sipedge:settings guests_only_timeout
	tests := []struct {
		name     string
		override string // confcfg guests_only_timeout
		wantEnd  time.Duration
		wantLogs int
	}{
		{"a good override wins", "30", 30 * time.Second, 0},
		{"a value that is not seconds is logged once, the global value used", "abc", global, 1},
		{"an out-of-range value is logged once, the global value used", "86401", global, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			in := e.instance("A", rulesOptions(60*time.Second, 0))
			e.mr.HSet(e.k.Settings(), "guests_only_timeout", "90")
			in.mg.refreshSettings(context.Background(), t0)
			e.newConf("conf-1", "host@example.com")
			e.mr.HSet(e.k.ConfCfg("conf-1"), "guests_only_timeout", tc.override)
			in.join(t, in.call(t, "call-guest", "conf-1"), "guest@example.com") // no Host: the timer runs from t0

			for e.clock.since() < 5*time.Minute && len(in.ender.log()) == 0 {
				in.tick(true)
				e.clock.advance(time.Second)
			}
			ends := in.ender.ends()
			if len(ends) != 1 || ends[0].At.Sub(t0) != tc.wantEnd || ends[0].Reason != "guests_only" {
				t.Fatalf("ended %v, want call-guest at t=%v by guests_only", ends, tc.wantEnd)
			}
			in.waitLeft(t, "call-guest")
			if n := in.logs.count(logLine{msg: "bad conference setting ignored",
				fields: map[string]string{"key": "sipedge:confcfg:conf-1", "field": "guests_only_timeout"}}); n != tc.wantLogs {
				t.Errorf("bad conference setting logged %d times over %d evaluations, want %d", n, int(tc.wantEnd/time.Second)+1, tc.wantLogs)
			}
		})
	}

	t.Run("a changed bad value is logged again", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A")
		count := func() int { return in.logs.count(logLine{msg: "bad conference setting ignored"}) }
		var got []int
		for _, v := range []string{"abc", "abc", "-1", "-1", "abc"} {
			s := in.mg.confSettings("conf-1", map[string]string{"guests_only_timeout": v, "hosts": "a@example.com"})
			if s.GuestsOnly != 60*time.Second {
				t.Errorf("guests-only with confcfg %q = %v, want the global 60s", v, s.GuestsOnly)
			}
			got = append(got, count())
		}
		if want := []int{1, 1, 2, 2, 3}; !slices.Equal(got, want) {
			t.Errorf("log lines after each evaluation = %v, want %v", got, want)
		}
	})
}
