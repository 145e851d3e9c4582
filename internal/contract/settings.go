package contract

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sipedge/sipedge/internal/keys"
)

// Settings are the run-time settings of sipedge:settings (SPEC §2). The
// YAML file gives the defaults; Redis overrides them while sipedge runs.
type Settings struct {
	RetryAfter   int           // retry_after: seconds in Retry-After of 503 answers
	DrainTimeout time.Duration // drain_timeout: 0 = a drain never ends calls
	DrainBye     bool          // drain_action: at drain timeout true = BYE remaining calls, false = keep them
	SlowStart    time.Duration // slow_start: 0 = a returning node takes its full weight at once
	MediaTimeout time.Duration // media_timeout: silence that ends a participant (1..86400 s)
	GuestsOnly   time.Duration // guests_only_timeout: 0..86400 s, 0 = end at once
	Backstop     time.Duration // last_participant_timeout: 0 = never, else 60..86400 s
}

// DefaultSettings are SPEC's defaults.
func DefaultSettings() Settings {
	return Settings{RetryAfter: 30, DrainTimeout: 7200 * time.Second, DrainBye: true, SlowStart: 60 * time.Second,
		MediaTimeout: 60 * time.Second, GuestsOnly: 60 * time.Second}
}

// Settings hash fields.
const (
	SettingRetryAfter   = "retry_after"
	SettingDrainTimeout = "drain_timeout"
	SettingDrainAction  = "drain_action"
	SettingSlowStart    = "slow_start"
	SettingMediaTimeout = "media_timeout"
	SettingGuestsOnly   = "guests_only_timeout"
	SettingBackstop     = "last_participant_timeout"
)

// SettingField describes one field of sipedge:settings.
type SettingField struct {
	Name string
	// parse applies v to s, or says what is wrong (sentinel, reason).
	parse func(s *Settings, v string) (error, string)
	// keep restores the field's value from last.
	keep func(dst *Settings, last Settings)
	// Show formats the value in force the way sipedgectl prints it.
	Show func(s Settings) string
}

// SettingFields are the fields of sipedge:settings, in display order.
var SettingFields = []SettingField{
	secondsField(SettingRetryAfter, 0, 86400, false, func(s *Settings) *int { return &s.RetryAfter }, nil),
	secondsField(SettingDrainTimeout, 0, 604800, false, nil, func(s *Settings) *time.Duration { return &s.DrainTimeout }),
	{
		Name: SettingDrainAction,
		parse: func(s *Settings, v string) (error, string) {
			switch strings.TrimSpace(v) {
			case "bye":
				s.DrainBye = true
			case "keep":
				s.DrainBye = false
			default:
				return ErrUnknown, strconv.Quote(v) + " is not bye or keep"
			}
			return nil, ""
		},
		keep: func(d *Settings, l Settings) { d.DrainBye = l.DrainBye },
		Show: func(s Settings) string { return DrainAction(s.DrainBye) },
	},
	secondsField(SettingSlowStart, 0, 3600, false, nil, func(s *Settings) *time.Duration { return &s.SlowStart }),
	secondsField(SettingMediaTimeout, 1, 86400, false, nil, func(s *Settings) *time.Duration { return &s.MediaTimeout }),
	secondsField(SettingGuestsOnly, 0, 86400, false, nil, func(s *Settings) *time.Duration { return &s.GuestsOnly }),
	secondsField(SettingBackstop, 60, 86400, true, nil, func(s *Settings) *time.Duration { return &s.Backstop }),
}

// DrainAction is the stored form of Settings.DrainBye.
func DrainAction(bye bool) string {
	if bye {
		return "bye"
	}
	return "keep"
}

// secondsField is a whole-seconds field in lo..hi (or 0 when zeroOK),
// stored in an int (n) or a Duration (dur): exactly one is non-nil.
func secondsField(name string, lo, hi int, zeroOK bool, n func(*Settings) *int, dur func(*Settings) *time.Duration) SettingField {
	want := strconv.Itoa(lo) + ".." + strconv.Itoa(hi)
	if zeroOK {
		want = "0 or " + want
	}
	get := func(s *Settings) int {
		if n != nil {
			return *n(s)
		}
		return int(*dur(s) / time.Second)
	}
	set := func(s *Settings, v int) {
		if n != nil {
			*n(s) = v
		} else {
			*dur(s) = time.Duration(v) * time.Second
		}
	}
	return SettingField{
		Name: name,
		parse: func(s *Settings, v string) (error, string) {
			x, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return ErrNotSeconds, strconv.Quote(v) + " is not a whole number of seconds"
			}
			if (x < lo || x > hi) && !(zeroOK && x == 0) {
				return ErrOutOfRange, strconv.Itoa(x) + " is out of range " + want
			}
			set(s, x)
			return nil, ""
		},
		keep: func(d *Settings, l Settings) { set(d, get(&l)) },
		Show: func(s Settings) string { return strconv.Itoa(get(&s)) + "s" },
	}
}

// IsSettingField reports whether name is a field of sipedge:settings this
// package validates.
func IsSettingField(name string) bool {
	for _, f := range SettingFields {
		if f.Name == name {
			return true
		}
	}
	return false
}

// ParseSettings reads a sipedge:settings hash over defaults. A field that
// is absent takes its default; a bad one keeps its value from last (the
// last good settings; pass defaults when there is no history) and is
// reported. Fields of later features are ignored.
func ParseSettings(k keys.Keys, defaults, last Settings, fields map[string]string) (Settings, []*FieldError) {
	s := defaults
	var errs []*FieldError
	for _, f := range SettingFields {
		v, ok := fields[f.Name]
		if !ok {
			continue
		}
		if sentinel, reason := f.parse(&s, v); sentinel != nil {
			f.keep(&s, last)
			errs = append(errs, &FieldError{Key: k.Settings(), Field: f.Name, Value: v, Reason: reason, Err: sentinel})
		}
	}
	return s, errs
}

// confCfgFields are the fields of sipedge:settings a conference may
// override in its sipedge:confcfg:<id> hash.
var confCfgFields = []string{SettingGuestsOnly, SettingBackstop}

// ParseConfCfg applies conference conf's overrides (sipedge:confcfg:<id>)
// over base, the settings in force. An absent field keeps base's value; a
// bad one keeps it too and is reported. Other fields (hosts) are not
// settings and are ignored.
func ParseConfCfg(k keys.Keys, conf string, base Settings, fields map[string]string) (Settings, []*FieldError) {
	s := base
	var errs []*FieldError
	for _, f := range SettingFields {
		v, ok := fields[f.Name]
		if !ok || !slices.Contains(confCfgFields, f.Name) {
			continue
		}
		if sentinel, reason := f.parse(&s, v); sentinel != nil {
			f.keep(&s, base)
			errs = append(errs, &FieldError{Key: k.ConfCfg(conf), Field: f.Name, Value: v, Reason: reason, Err: sentinel})
		}
	}
	return s, errs
}
