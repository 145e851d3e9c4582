package admission

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Settings are the run-time settings of sipedge:settings (SPEC §2). The
// YAML file gives the defaults; Redis overrides them while sipedge runs.
type Settings struct {
	RetryAfter   int           // seconds in Retry-After of 503 answers
	DrainTimeout time.Duration // 0 = a drain never ends calls
	DrainBye     bool          // at drain timeout: true = BYE remaining calls, false = keep them
	SlowStart    time.Duration // 0 = a returning node takes its full weight at once
}

// DefaultSettings are SPEC's defaults.
func DefaultSettings() Settings {
	return Settings{RetryAfter: 30, DrainTimeout: 7200 * time.Second, DrainBye: true, SlowStart: 60 * time.Second}
}

// settingField describes one field of sipedge:settings.
type settingField struct {
	name  string
	apply func(s *Settings, v string) error
	keep  func(dst *Settings, last Settings) // restore the last good value
}

func seconds(lo, hi int, set func(*Settings, int)) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a whole number of seconds", v)
		}
		if n < lo || n > hi {
			return fmt.Errorf("%d out of range %d..%d", n, lo, hi)
		}
		set(s, n)
		return nil
	}
}

var settingFields = []settingField{
	{"retry_after", seconds(0, 86400, func(s *Settings, n int) { s.RetryAfter = n }),
		func(d *Settings, l Settings) { d.RetryAfter = l.RetryAfter }},
	{"drain_timeout", seconds(0, 604800, func(s *Settings, n int) { s.DrainTimeout = time.Duration(n) * time.Second }),
		func(d *Settings, l Settings) { d.DrainTimeout = l.DrainTimeout }},
	{"slow_start", seconds(0, 3600, func(s *Settings, n int) { s.SlowStart = time.Duration(n) * time.Second }),
		func(d *Settings, l Settings) { d.SlowStart = l.SlowStart }},
	{"drain_action", func(s *Settings, v string) error {
		switch strings.TrimSpace(v) {
		case "bye":
			s.DrainBye = true
		case "keep":
			s.DrainBye = false
		default:
			return fmt.Errorf("%q is not bye or keep", v)
		}
		return nil
	}, func(d *Settings, l Settings) { d.DrainBye = l.DrainBye }},
}

// ParseSettings reads a sipedge:settings hash over defaults. A field that
// is absent takes its default; a bad one keeps its value from last (the
// last good settings) and is reported. Fields of later features are ignored.
func ParseSettings(defaults, last Settings, fields map[string]string) (Settings, []FieldError) {
	s := defaults
	var errs []FieldError
	for _, f := range settingFields {
		v, ok := fields[f.name]
		if !ok {
			continue
		}
		if err := f.apply(&s, v); err != nil {
			f.keep(&s, last)
			errs = append(errs, FieldError{Field: f.name, Err: err})
		}
	}
	return s, errs
}

// FieldError is a bad value in one field of a Redis hash.
type FieldError struct {
	Key   string
	Field string
	Err   error
}

func (e FieldError) Error() string {
	return fmt.Sprintf("%s field %q: %v", e.Key, e.Field, e.Err)
}
