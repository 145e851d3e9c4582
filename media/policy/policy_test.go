package policy

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

func sec(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// part builds a participant; keep "" means the kind's default.
func part(id string, r Role, k Kind, keep KeepAlive, present bool) Participant {
	return Participant{ID: id, Role: r, Kind: k, KeepAlive: keep, Present: present}
}
func host(id string) Participant  { return part(id, RoleHost, KindNormal, "", true) }
func guest(id string) Participant { return part(id, RoleGuest, KindNormal, "", true) }
func guests(n int) []Participant {
	ps := make([]Participant, n)
	for i := range ps {
		ps[i] = guest(string(rune('a' + i)))
	}
	return ps
}

// event is the snapshot the caller sees from time at (seconds after t0) on.
type event struct {
	at    float64
	parts []Participant
}

// outcome is when and by which rule a replayed conference ended.
type outcome struct {
	ended bool
	at    time.Duration
	rule  Rule
}

// replay plays a script as the caller does: Step on every change and again
// at each reported Deadline while the snapshot stays the same, until the
// conference ends or no timer runs.
func replay(t *testing.T, s Settings, script []event) outcome {
	t.Helper()
	var timers Timers
	for i, ev := range script {
		now := t0.Add(sec(ev.at))
		for steps := 0; ; steps++ {
			if steps > 100 {
				t.Fatal("replay does not settle")
			}
			v := Step(timers, ev.parts, s, now)
			if v.End {
				return outcome{true, now.Sub(t0), v.Rule}
			}
			if !v.Deadline.After(now) && !v.Deadline.IsZero() {
				t.Fatalf("deadline %v not after now %v without End", v.Deadline, now)
			}
			timers = v.Next
			if v.Deadline.IsZero() || (i+1 < len(script) && !v.Deadline.Before(t0.Add(sec(script[i+1].at)))) {
				break
			}
			now = v.Deadline
		}
	}
	return outcome{}
}

func TestWorkedExamples_SPEC(t *testing.T) {
	s := Settings{GuestsOnly: 120 * time.Second, Backstop: 60 * time.Second}
	start := append([]Participant{host("h")}, guests(3)...)
	cases := []struct {
		name   string
		script []event
		want   outcome
	}{
		{"one Guest left at t=30 ends at t=90 by the backstop",
			[]event{{-10, start}, {0, guests(3)}, {30, guests(1)}},
			outcome{true, sec(90), RuleLastParticipant}},
		{"two Guests left at t=30 end at t=120 by guests-only",
			[]event{{-10, start}, {0, guests(3)}, {30, guests(2)}},
			outcome{true, sec(120), RuleGuestsOnly}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := replay(t, s, tc.script); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}

	t.Run("one Guest left: not at 89.999 s, at 90 s, deadline 90 s", func(t *testing.T) {
		v := Step(Timers{}, guests(3), s, t0)
		v = Step(v.Next, guests(1), s, t0.Add(sec(30)))
		if v.End || !v.Deadline.Equal(t0.Add(sec(90))) {
			t.Fatalf("at 30 s: end %v deadline %v, want running with deadline 90 s", v.End, v.Deadline.Sub(t0))
		}
		timers := v.Next
		if v := Step(timers, guests(1), s, t0.Add(sec(89.999))); v.End || !v.Deadline.Equal(t0.Add(sec(90))) {
			t.Fatalf("at 89.999 s: %+v, want running with deadline 90 s", v)
		}
		if v := Step(timers, guests(1), s, t0.Add(sec(90))); !v.End || v.Rule != RuleLastParticipant {
			t.Fatalf("at 90 s: %+v, want end by last_participant", v)
		}
	})
}

func TestGuestsOnlyTimeout_EndsAfterLastHost(t *testing.T) {
	s60 := Settings{GuestsOnly: 60 * time.Second}
	cases := []struct {
		name   string
		s      Settings
		script []event
		want   outcome
	}{
		{"last Host leaving starts the timer",
			s60, []event{{0, []Participant{host("h"), guest("g1"), guest("g2")}}, {10, guests(2)}},
			outcome{true, sec(70), RuleGuestsOnly}},
		{"a second Host staying keeps it alive",
			s60, []event{{0, []Participant{host("h1"), host("h2"), guest("g")}}, {10, []Participant{host("h2"), guest("g")}}},
			outcome{}},
		{"a Host rejoining cancels the timer",
			s60, []event{{0, []Participant{host("h"), guest("g1"), guest("g2")}}, {10, guests(2)},
				{50, append(guests(2), host("h"))}, {100, append(guests(2), host("h"))}},
			outcome{}},
		{"a Host rejoining then leaving restarts the timer from zero",
			s60, []event{{0, guests(2)}, {50, append(guests(2), host("h"))}, {55, guests(2)}},
			outcome{true, sec(115), RuleGuestsOnly}},
		{"guests-only 0 ends at once",
			Settings{}, []event{{0, []Participant{host("h"), guest("g1"), guest("g2")}}, {10, guests(2)}},
			outcome{true, sec(10), RuleGuestsOnly}},
		{"a conference that starts with Guests only runs the timer",
			s60, []event{{0, guests(1)}, {20, guests(3)}},
			outcome{true, sec(60), RuleGuestsOnly}},
		{"a Host that stops sending media starts the timer",
			s60, []event{{0, []Participant{host("h"), guest("g")}}, {5, []Participant{part("h", RoleHost, KindNormal, "", false), guest("g")}}},
			outcome{true, sec(65), RuleGuestsOnly}},
		{"an adp Host alone with a Guest does not keep it alive",
			s60, []event{{0, []Participant{part("adp", RoleHost, KindADP, "", true), guest("g")}}},
			outcome{true, sec(60), RuleGuestsOnly}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := replay(t, tc.s, tc.script); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestLastParticipantBackstop(t *testing.T) {
	cases := []struct {
		name   string
		s      Settings
		script []event
		want   outcome
	}{
		{"a lone Host ends after the backstop",
			Settings{GuestsOnly: 60 * time.Second, Backstop: 300 * time.Second},
			[]event{{0, []Participant{host("h"), guest("g")}}, {10, []Participant{host("h")}}},
			outcome{true, sec(310), RuleLastParticipant}},
		{"backstop 0 never ends a lone Host",
			Settings{GuestsOnly: 60 * time.Second},
			[]event{{0, []Participant{host("h"), guest("g")}}, {10, []Participant{host("h")}}, {86400 * 30, []Participant{host("h")}}},
			outcome{}},
		{"a second participant joining cancels the backstop",
			Settings{GuestsOnly: 60 * time.Second, Backstop: 60 * time.Second},
			[]event{{0, []Participant{host("h")}}, {59, []Participant{host("h"), guest("g")}}, {100, []Participant{host("h")}}},
			outcome{true, sec(160), RuleLastParticipant}},
		{"empty ends at once",
			DefaultSettings(),
			[]event{{0, []Participant{host("h")}}, {5, nil}},
			outcome{true, sec(5), RuleEmpty}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := replay(t, tc.s, tc.script); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestStep_BothDue_EarlierWins(t *testing.T) {
	s := Settings{GuestsOnly: 60 * time.Second, Backstop: 60 * time.Second}
	now := t0.Add(sec(100))
	cases := []struct {
		name   string
		timers Timers
		want   Rule
	}{
		{"backstop due earlier", Timers{NoHostSince: t0.Add(sec(20)), OneLeftSince: t0.Add(sec(10))}, RuleLastParticipant},
		{"guests-only due earlier", Timers{NoHostSince: t0.Add(sec(10)), OneLeftSince: t0.Add(sec(20))}, RuleGuestsOnly},
		{"tie goes to guests-only", Timers{NoHostSince: t0.Add(sec(10)), OneLeftSince: t0.Add(sec(10))}, RuleGuestsOnly},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := Step(tc.timers, guests(1), s, now)
			if !v.End || v.Rule != tc.want {
				t.Errorf("got end %v rule %q, want %q", v.End, v.Rule, tc.want)
			}
		})
	}
}

func TestStep_TimersAndDeadline(t *testing.T) {
	s := Settings{GuestsOnly: 120 * time.Second, Backstop: 60 * time.Second}
	v := Step(Timers{}, []Participant{host("h"), guest("g")}, s, t0)
	if v.End || v.Next != (Timers{}) || !v.Deadline.IsZero() || v.KeptAliveBy != KeptByHost {
		t.Fatalf("Host present: %+v, want no timers, no deadline, kept by host", v)
	}
	v = Step(v.Next, guests(1), s, t0.Add(sec(5)))
	want := Timers{NoHostSince: t0.Add(sec(5)), OneLeftSince: t0.Add(sec(5))}
	if v.End || v.Next != want || !v.Deadline.Equal(t0.Add(sec(65))) || v.KeptAliveBy != "" {
		t.Fatalf("one Guest: %+v, want timers %+v and deadline 65 s", v, want)
	}
	v = Step(v.Next, guests(1), s, t0.Add(sec(30)))
	if v.Next != want {
		t.Fatalf("running timers moved: %+v, want %+v", v.Next, want)
	}
	v = Step(v.Next, guests(2), s, t0.Add(sec(31)))
	if v.Next != (Timers{NoHostSince: t0.Add(sec(5))}) || !v.Deadline.Equal(t0.Add(sec(125))) {
		t.Fatalf("two Guests: %+v, want only guests-only running, deadline 125 s", v)
	}
	if v := Step(Timers{}, nil, s, t0); !v.End || v.Rule != RuleEmpty {
		t.Fatalf("empty: %+v, want end by empty", v)
	}
}

func TestKeepsAlive(t *testing.T) {
	adp := func(keep KeepAlive) Participant { return part("adp", RoleHost, KindADP, keep, true) }
	cases := []struct {
		name  string
		parts []Participant
		by    string
	}{
		{"normal Host keeps it alive", []Participant{host("h"), guest("g")}, KeptByHost},
		{"normal Host not present does not", []Participant{part("h", RoleHost, KindNormal, "", false), guest("g")}, ""},
		{"normal Host with keep-alive no does not", []Participant{part("h", RoleHost, KindNormal, KeepNo, true), guest("g")}, ""},
		{"Guest with keep-alive yes does not", []Participant{part("g", RoleGuest, KindNormal, KeepYes, true)}, ""},
		{"adp alone with no", []Participant{adp(KeepNo), guest("g")}, ""},
		{"adp alone with yes", []Participant{adp(KeepYes), guest("g")}, KeptByYes},
		{"adp alone with if-multiple", []Participant{adp(KeepIfMultiple), guest("g")}, ""},
		{"adp alone with default (if-multiple)", []Participant{adp(""), guest("g")}, ""},
		{"two if-multiple, one a Host", []Participant{adp(""), part("a2", RoleHost, KindADP, "", true)}, KeptByIfMultiple},
		{"two if-multiple, both Guests", []Participant{part("g1", RoleGuest, KindADP, "", true), part("g2", RoleGuest, KindNormal, KeepIfMultiple, true)}, ""},
		{"one if-multiple Host and one if-multiple Guest", []Participant{adp(""), part("g", RoleGuest, KindADP, "", true)}, KeptByIfMultiple},
		{"if-multiple Guest counts even when silent", []Participant{adp(""), part("g", RoleGuest, KindADP, "", false)}, KeptByIfMultiple},
		{"two if-multiple Hosts, neither present", []Participant{part("a1", RoleHost, KindADP, "", false), part("a2", RoleHost, KindADP, "", false)}, ""},
		{"admin default yes", []Participant{part("adm", RoleHost, KindAdmin, "", true), guest("g")}, KeptByYes},
		{"admin with no", []Participant{part("adm", RoleHost, KindAdmin, KeepNo, true), guest("g")}, ""},
		{"admin not present", []Participant{part("adm", RoleHost, KindAdmin, "", false), guest("g")}, ""},
		{"normal Host with if-multiple alone", []Participant{part("h", RoleHost, KindNormal, KeepIfMultiple, true), guest("g")}, ""},
		{"normal Host wins over adp", []Participant{adp(KeepYes), host("h")}, KeptByHost},
		{"keep-alive yes wins over if-multiple", []Participant{adp(""), adp(""), part("adm", RoleHost, KindAdmin, "", true)}, KeptByYes},
		{"Guests only", guests(3), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kept, by := KeepsAlive(tc.parts)
			if kept != (tc.by != "") || by != tc.by {
				t.Errorf("KeepsAlive = %v, %q; want %q", kept, by, tc.by)
			}
			v := Step(Timers{}, tc.parts, Settings{GuestsOnly: time.Minute}, t0)
			if v.KeptAliveBy != tc.by || v.Next.NoHostSince.IsZero() != kept {
				t.Errorf("Step: kept by %q, NoHostSince %v; want %q", v.KeptAliveBy, v.Next.NoHostSince, tc.by)
			}
		})
	}
}

func TestParseEnums(t *testing.T) {
	cases := []struct {
		in    string
		parse func(string) (string, error)
		want  string
	}{
		{"host", func(s string) (string, error) { r, err := ParseRole(s); return string(r), err }, "host"},
		{" Guest\t", func(s string) (string, error) { r, err := ParseRole(s); return string(r), err }, "guest"},
		{"owner", func(s string) (string, error) { r, err := ParseRole(s); return string(r), err }, ""},
		{"", func(s string) (string, error) { r, err := ParseRole(s); return string(r), err }, ""},
		{"ADP", func(s string) (string, error) { k, err := ParseKind(s); return string(k), err }, "adp"},
		{"normal ", func(s string) (string, error) { k, err := ParseKind(s); return string(k), err }, "normal"},
		{"Admin", func(s string) (string, error) { k, err := ParseKind(s); return string(k), err }, "admin"},
		{"bot", func(s string) (string, error) { k, err := ParseKind(s); return string(k), err }, ""},
		{"If-Multiple", func(s string) (string, error) { k, err := ParseKeepAlive(s); return string(k), err }, "if-multiple"},
		{"YES", func(s string) (string, error) { k, err := ParseKeepAlive(s); return string(k), err }, "yes"},
		{"no", func(s string) (string, error) { k, err := ParseKeepAlive(s); return string(k), err }, "no"},
		{"maybe", func(s string) (string, error) { k, err := ParseKeepAlive(s); return string(k), err }, ""},
	}
	for _, tc := range cases {
		got, err := tc.parse(tc.in)
		if tc.want == "" {
			if !errors.Is(err, ErrUnknownValue) {
				t.Errorf("parse %q: err = %v, want ErrUnknownValue", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parse %q = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if d := [...]KeepAlive{DefaultKeepAlive(KindNormal), DefaultKeepAlive(KindADP), DefaultKeepAlive(KindAdmin)}; d != [...]KeepAlive{KeepYes, KeepIfMultiple, KeepYes} {
		t.Errorf("defaults normal/adp/admin = %v", d)
	}
}

func FuzzParseEnums(f *testing.F) {
	for _, s := range []string{"host", " GUEST ", "adp", "Admin", "if-multiple", "no", "", "\x00", "ｈost"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if r, err := ParseRole(s); err == nil {
			if r != RoleHost && r != RoleGuest {
				t.Fatalf("ParseRole(%q) = %q", s, r)
			}
		} else if r != "" || !errors.Is(err, ErrUnknownValue) {
			t.Fatalf("ParseRole(%q) = %q, %v", s, r, err)
		}
		if k, err := ParseKind(s); err == nil {
			if k != KindNormal && k != KindADP && k != KindAdmin {
				t.Fatalf("ParseKind(%q) = %q", s, k)
			}
		} else if k != "" || !errors.Is(err, ErrUnknownValue) {
			t.Fatalf("ParseKind(%q) = %q, %v", s, k, err)
		}
		if k, err := ParseKeepAlive(s); err == nil {
			if k != KeepYes && k != KeepNo && k != KeepIfMultiple {
				t.Fatalf("ParseKeepAlive(%q) = %q", s, k)
			}
		} else if k != "" || !errors.Is(err, ErrUnknownValue) {
			t.Fatalf("ParseKeepAlive(%q) = %q, %v", s, k, err)
		}
	})
}
