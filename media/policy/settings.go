package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Settings are the termination timeouts (sipedge:settings, overridden per
// conference by sipedge:confcfg:<id>).
type Settings struct {
	GuestsOnly time.Duration // guests_only_timeout: 0..86400 s, 0 = end at once
	Backstop   time.Duration // last_participant_timeout: 0 = never, else 60..86400 s
}

// Field names in the Redis hashes.
const (
	FieldGuestsOnly = "guests_only_timeout"
	FieldBackstop   = "last_participant_timeout"
)

// Sentinel errors wrapped in FieldError.Err.
var (
	ErrNotSeconds = errors.New("not a whole number of seconds")
	ErrOutOfRange = errors.New("out of range")
)

// DefaultSettings are SPEC's defaults: guests-only 60 s, no backstop.
func DefaultSettings() Settings {
	return Settings{GuestsOnly: 60 * time.Second}
}

// FieldError is a bad value in one field of a settings hash.
type FieldError struct {
	Field string
	Value string
	Err   error
}

func (e FieldError) Error() string {
	return fmt.Sprintf("field %s = %q: %v", e.Field, e.Value, e.Err)
}

func (e FieldError) Unwrap() error { return e.Err }

// ParseSettings reads guests_only_timeout and last_participant_timeout
// (whole seconds) from a Redis hash over base. An absent field keeps base's
// value; a bad one keeps it too and is reported. Unknown fields are ignored.
// Apply it to sipedge:settings over the YAML defaults, then to
// sipedge:confcfg:<id> over that result, so per-conference overrides win.
func ParseSettings(base Settings, fields map[string]string) (Settings, []FieldError) {
	s := base
	var errs []FieldError
	parse := func(name string, dst *time.Duration, valid func(int) bool, want string) {
		raw, ok := fields[name]
		if !ok {
			return
		}
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		switch {
		case err != nil:
			errs = append(errs, FieldError{name, raw, ErrNotSeconds})
		case !valid(n):
			errs = append(errs, FieldError{name, raw, fmt.Errorf("%w: want %s", ErrOutOfRange, want)})
		default:
			*dst = time.Duration(n) * time.Second
		}
	}
	parse(FieldGuestsOnly, &s.GuestsOnly,
		func(n int) bool { return n >= 0 && n <= 86400 }, "0..86400")
	parse(FieldBackstop, &s.Backstop,
		func(n int) bool { return n == 0 || n >= 60 && n <= 86400 }, "0 or 60..86400")
	return s, errs
}
