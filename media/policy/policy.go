// Package policy decides when a conference ends (SPEC §5). It is a pure
// state machine: Step takes a participant snapshot, the timers stored at the
// previous step and the current time, and returns a Verdict. No I/O, no
// goroutines, no clock of its own; the caller builds the snapshot, stores the
// timers (in Redis, so every instance agrees) and acts on the verdict.
package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Role is a participant's role in its conference.
type Role string

// Kind says how a participant joined.
type Kind string

// KeepAlive says whether a Host keeps its conference alive.
type KeepAlive string

// Rule names the termination rule that ended a conference; it is also the
// text of the BYE's Reason header and the metric label.
type Rule string

const (
	RoleHost  Role = "host"
	RoleGuest Role = "guest"

	KindNormal Kind = "normal"
	KindADP    Kind = "adp"   // automatically dialed by the media node
	KindAdmin  Kind = "admin" // added by an administrator

	KeepYes        KeepAlive = "yes"
	KeepNo         KeepAlive = "no"
	KeepIfMultiple KeepAlive = "if-multiple"

	RuleGuestsOnly      Rule = "guests_only"
	RuleLastParticipant Rule = "last_participant"
	RuleEmpty           Rule = "empty"
)

// Values of Verdict.KeptAliveBy.
const (
	KeptByHost       = "host"           // a present normal Host with keep-alive yes
	KeptByYes        = "keep-alive yes" // a present adp/admin Host with keep-alive yes
	KeptByIfMultiple = "if-multiple"    // a present if-multiple Host and another if-multiple participant
)

// ErrUnknownValue is wrapped by the Parse functions for a value outside the set.
var ErrUnknownValue = errors.New("unknown value")

func parseEnum[T ~string](what, s string, valid ...T) (T, error) {
	v := T(strings.ToLower(strings.TrimSpace(s)))
	for _, ok := range valid {
		if v == ok {
			return v, nil
		}
	}
	names := make([]string, len(valid))
	for i, ok := range valid {
		names[i] = string(ok)
	}
	return "", fmt.Errorf("%s %q: %w (want %s)", what, s, ErrUnknownValue, strings.Join(names, ", "))
}

// ParseRole reads "host" or "guest", case-insensitive and trimmed.
func ParseRole(s string) (Role, error) { return parseEnum("role", s, RoleHost, RoleGuest) }

// ParseKind reads "normal", "adp" or "admin", case-insensitive and trimmed.
func ParseKind(s string) (Kind, error) { return parseEnum("kind", s, KindNormal, KindADP, KindAdmin) }

// ParseKeepAlive reads "yes", "no" or "if-multiple", case-insensitive and trimmed.
func ParseKeepAlive(s string) (KeepAlive, error) {
	return parseEnum("keep-alive", s, KeepYes, KeepNo, KeepIfMultiple)
}

// DefaultKeepAlive is the keep-alive of a participant whose trusted headers
// did not set one: if-multiple for adp, yes for admin and normal.
func DefaultKeepAlive(k Kind) KeepAlive {
	if k == KindADP {
		return KeepIfMultiple
	}
	return KeepYes
}

// Participant is one participant of the snapshot Step evaluates.
type Participant struct {
	ID        string // Call-ID of its dialog
	Role      Role
	Kind      Kind
	KeepAlive KeepAlive // empty = DefaultKeepAlive(Kind)
	Present   bool      // its endpoint's own RTP flows
}

func (p Participant) keepAlive() KeepAlive {
	if p.KeepAlive == "" {
		return DefaultKeepAlive(p.Kind)
	}
	return p.KeepAlive
}

// Timers is the only memory the rules keep between steps; the caller stores
// it. A zero time means the timer is not running.
type Timers struct {
	NoHostSince  time.Time // since when no Host keeps the conference alive while someone remains
	OneLeftSince time.Time // since when exactly one participant remains
}

// Verdict is the outcome of one Step.
type Verdict struct {
	End         bool
	Rule        Rule      // set when End
	Next        Timers    // timers to store (as they stood when End)
	Deadline    time.Time // earliest due time of a running timer; zero = none. Step again then.
	KeptAliveBy string    // a KeptBy* value, or "" when no Host keeps the conference alive
}

// KeepsAlive reports whether a Host keeps the conference alive and why (a
// KeptBy* value). Only present Hosts count: keep-alive yes keeps it alive;
// if-multiple does when at least two participants (any role, any presence,
// the Host included) have if-multiple; no never does.
func KeepsAlive(parts []Participant) (bool, string) {
	multiple := 0
	for _, p := range parts {
		if p.keepAlive() == KeepIfMultiple {
			multiple++
		}
	}
	by := ""
	for _, p := range parts {
		if p.Role != RoleHost || !p.Present {
			continue
		}
		switch p.keepAlive() {
		case KeepYes:
			if p.Kind == KindADP || p.Kind == KindAdmin {
				by = KeptByYes
				continue
			}
			return true, KeptByHost
		case KeepIfMultiple:
			if multiple >= 2 && by == "" {
				by = KeptByIfMultiple
			}
		}
	}
	return by != "", by
}

// Step evaluates the termination rules for the snapshot parts at now, given
// the timers stored by the previous step. The first rule due ends the
// conference; when two are due, the one due earlier wins (tie: guests_only).
func Step(prev Timers, parts []Participant, s Settings, now time.Time) Verdict {
	if len(parts) == 0 {
		return Verdict{End: true, Rule: RuleEmpty}
	}
	kept, by := KeepsAlive(parts)
	v := Verdict{Next: prev, KeptAliveBy: by}

	switch {
	case kept:
		v.Next.NoHostSince = time.Time{}
	case v.Next.NoHostSince.IsZero():
		v.Next.NoHostSince = now
	}
	switch {
	case s.Backstop <= 0 || len(parts) != 1:
		v.Next.OneLeftSince = time.Time{}
	case v.Next.OneLeftSince.IsZero():
		v.Next.OneLeftSince = now
	}

	// Candidates in tie-break order: the first of equal due times wins.
	type timer struct {
		rule Rule
		due  time.Time
	}
	var running []timer
	if !v.Next.NoHostSince.IsZero() {
		running = append(running, timer{RuleGuestsOnly, v.Next.NoHostSince.Add(s.GuestsOnly)})
	}
	if !v.Next.OneLeftSince.IsZero() {
		running = append(running, timer{RuleLastParticipant, v.Next.OneLeftSince.Add(s.Backstop)})
	}
	for _, t := range running {
		if v.Deadline.IsZero() || t.due.Before(v.Deadline) {
			v.Deadline, v.Rule = t.due, t.rule
		}
	}
	if !v.Deadline.IsZero() && !now.Before(v.Deadline) {
		v.End = true
	} else {
		v.Rule = ""
	}
	return v
}
