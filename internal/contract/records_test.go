package contract

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/sipedge/sipedge/internal/keys"
)

var tk = keys.New("")

func TestParseSettings_BadValuesKeepLastGood(t *testing.T) {
	def := DefaultSettings()
	last := def
	last.RetryAfter = 10
	s, errs := ParseSettings(tk, def, last, map[string]string{
		"retry_after": "abc", "drain_timeout": "5", "slow_start": "99999", "drain_action": "keep", "media_timeout": "x",
	})
	if s.RetryAfter != 10 {
		t.Errorf("retry_after = %d, want last good 10", s.RetryAfter)
	}
	if s.DrainTimeout != 5*time.Second || s.DrainBye {
		t.Errorf("drain = %s bye=%v, want 5s keep", s.DrainTimeout, s.DrainBye)
	}
	if s.SlowStart != def.SlowStart {
		t.Errorf("slow_start = %s, want last good %s", s.SlowStart, def.SlowStart)
	}
	fields := map[string]bool{}
	for _, e := range errs {
		fields[e.Field] = true
	}
	if len(errs) != 3 || !fields["retry_after"] || !fields["slow_start"] || !fields["media_timeout"] {
		t.Errorf("errors = %v, want retry_after, slow_start and media_timeout", errs)
	}
	// A field removed from Redis returns to the default.
	s, _ = ParseSettings(tk, def, s, map[string]string{})
	if s != def {
		t.Errorf("empty hash gives %+v, want defaults", s)
	}
}

func TestParseProfile(t *testing.T) {
	p, fe := ParseProfile(tk, "p1", map[string]string{"name": "rack 4", "servers": " hostA, hostB ,,", "status": "deservice"}, Profile{})
	if fe != nil || !p.Deservice || len(p.Servers) != 2 || p.Servers[1] != "hostB" {
		t.Fatalf("got %+v %v", p, fe)
	}
	p, fe = ParseProfile(tk, "p1", map[string]string{"status": "off"}, Profile{Deservice: true})
	if fe == nil || fe.Field != "status" || fe.Key != "sipedge:profile:p1" || !errors.Is(fe, ErrUnknown) || !p.Deservice {
		t.Fatalf("bad status: %+v %v, want last good deservice kept and the field named", p, fe)
	}
}

func TestParseSettings_Ranges(t *testing.T) {
	def := DefaultSettings()
	for _, tc := range []struct {
		field, value string
		want         error // nil: accepted
	}{
		{SettingMediaTimeout, "1", nil}, {SettingMediaTimeout, "86400", nil}, {SettingMediaTimeout, " 45 ", nil},
		{SettingMediaTimeout, "0", ErrOutOfRange}, {SettingMediaTimeout, "86401", ErrOutOfRange},
		{SettingMediaTimeout, "1.5", ErrNotSeconds}, {SettingMediaTimeout, "abc", ErrNotSeconds},
		{SettingGuestsOnly, "0", nil}, {SettingGuestsOnly, "86400", nil}, {SettingGuestsOnly, "-1", ErrOutOfRange},
		{SettingBackstop, "0", nil}, {SettingBackstop, "60", nil}, {SettingBackstop, "30", ErrOutOfRange},
		{SettingBackstop, "86401", ErrOutOfRange},
		{SettingRetryAfter, "0", nil}, {SettingRetryAfter, "86401", ErrOutOfRange},
		{SettingDrainTimeout, "604800", nil}, {SettingDrainTimeout, "604801", ErrOutOfRange},
		{SettingSlowStart, "3600", nil}, {SettingSlowStart, "3601", ErrOutOfRange},
		{SettingDrainAction, "keep", nil}, {SettingDrainAction, "never", ErrUnknown},
	} {
		t.Run(tc.field+"="+tc.value, func(t *testing.T) {
			s, errs := ParseSettings(tk, def, def, map[string]string{tc.field: tc.value})
			if tc.want == nil {
				if len(errs) != 0 {
					t.Fatalf("errors %v, want none", errs)
				}
				return
			}
			if len(errs) != 1 || !errors.Is(errs[0], tc.want) || errs[0].Field != tc.field ||
				errs[0].Value != tc.value || errs[0].Key != "sipedge:settings" {
				t.Fatalf("errors %v, want one %v on %s", errs, tc.want, tc.field)
			}
			if s != def {
				t.Errorf("settings %+v, want the last good (defaults) kept", s)
			}
			if !strings.Contains(errs[0].Error(), `sipedge:settings field "`+tc.field+`"`) {
				t.Errorf("error %q does not name the key and field", errs[0])
			}
		})
	}
}

func TestParseNodeCalls(t *testing.T) {
	calls, errs := ParseNodeCalls(tk, map[string]string{"n1": "3", "n2": "0", "n3": "x", "n4": "-1", "n5": "2.5"})
	if !maps.Equal(calls, map[string]int{"n1": 3, "n2": 0}) {
		t.Errorf("calls %v", calls)
	}
	bad := map[string]string{}
	for _, e := range errs {
		if e.Key != tk.NodeCalls() || !errors.Is(e, ErrNotNumber) {
			t.Errorf("error %+v", e)
		}
		bad[e.Field] = e.Value
	}
	if !maps.Equal(bad, map[string]string{"n3": "x", "n4": "-1", "n5": "2.5"}) {
		t.Errorf("bad %v", bad)
	}
}

func TestInstance_WrittenAsRead(t *testing.T) {
	in := Instance{Name: "edge-1", Site: "ams", Server: "srv1", Addr: "127.0.0.1:5060", State: "draining",
		Dialogs: 4, Deserviced: true, HeldBack: false, Heartbeat: time.UnixMilli(1_700_000_000_123)}
	kv := InstanceFields(in)
	fields := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		fields[kv[i].(string)] = kv[i+1].(string)
	}
	got, fe := ParseInstance(tk, "edge-1", fields)
	if fe != nil || got != in {
		t.Fatalf("read back %+v (%v), want %+v", got, fe, in)
	}
	got, fe = ParseInstance(tk, "edge-1", map[string]string{"site": "ams", "heartbeat": "yesterday"})
	if fe == nil || fe.Key != "sipedge:instance:edge-1" || fe.Field != "heartbeat" || !errors.Is(fe, ErrNotUnixMs) ||
		!got.Heartbeat.IsZero() || got.Site != "ams" {
		t.Fatalf("bad heartbeat: %+v %v", got, fe)
	}
}

func TestParseConf(t *testing.T) {
	c, errs := ParseConf(tk, "c1", map[string]string{"node": "cn1", "started": "1700000000000", "dialogs": "3", "instance": "edge-1"})
	if len(errs) != 0 || c.Node != "cn1" || c.Dialogs != 3 || c.Instance != "edge-1" || c.Started != time.UnixMilli(1_700_000_000_000) {
		t.Fatalf("got %+v %v", c, errs)
	}
	_, errs = ParseConf(tk, "c1", map[string]string{"started": "x", "dialogs": "-2"})
	got := map[string]error{}
	for _, e := range errs {
		got[e.Field] = e.Err
	}
	if got["node"] != ErrMissing || got["started"] != ErrNotUnixMs || got["dialogs"] != ErrNotNumber {
		t.Errorf("errors %v", errs)
	}
	if _, errs = ParseConf(tk, "gone", nil); len(errs) != 1 || !errors.Is(errs[0], ErrNoHash) {
		t.Errorf("absent hash: %v", errs)
	}
}

func TestSnapshot_Deservice(t *testing.T) {
	s := Empty(DefaultSettings())
	s.Profiles = map[string]Profile{
		"b": {ID: "b", Servers: []string{"srv1", "edge-2"}, Deservice: true},
		"a": {ID: "a", Servers: []string{"srv1"}, Deservice: true},
		"c": {ID: "c", Servers: []string{"srv3"}},
	}
	if got := s.DeservicedBy("edge-2", "srv1"); strings.Join(got, ",") != "a,b" {
		t.Errorf("DeservicedBy = %v, want a,b", got)
	}
	if got := s.DeservicedServers(); !maps.Equal(got, map[string]string{"srv1": "a", "edge-2": "b"}) {
		t.Errorf("DeservicedServers = %v", got)
	}
}

// FuzzParseSettings: sipedge:settings is written by anyone with redis-cli;
// no value may panic an instance, and what is accepted is in range.
func FuzzParseSettings(f *testing.F) {
	f.Add("30", "7200", "bye", "60", "60", "60", "0")
	f.Add("-1", "1e9", "BYE", " 5 ", "0", "86401", "59")
	f.Fuzz(func(t *testing.T, retry, drain, action, slow, media, guests, backstop string) {
		def := DefaultSettings()
		s, errs := ParseSettings(tk, def, def, map[string]string{SettingRetryAfter: retry, SettingDrainTimeout: drain,
			SettingDrainAction: action, SettingSlowStart: slow, SettingMediaTimeout: media, SettingGuestsOnly: guests,
			SettingBackstop: backstop})
		for _, e := range errs {
			if e.Err == nil || e.Key != tk.Settings() || !IsSettingField(e.Field) {
				t.Fatalf("error without origin or sentinel: %+v", e)
			}
		}
		if s.RetryAfter < 0 || s.RetryAfter > 86400 || s.MediaTimeout < time.Second || s.MediaTimeout > 86400*time.Second ||
			s.GuestsOnly < 0 || s.SlowStart < 0 || s.DrainTimeout < 0 ||
			(s.Backstop != 0 && (s.Backstop < 60*time.Second || s.Backstop > 86400*time.Second)) {
			t.Fatalf("accepted out-of-range settings %+v", s)
		}
	})
}
