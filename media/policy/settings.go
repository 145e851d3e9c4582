package policy

import "time"

// Settings are the termination timeouts (sipedge:settings, overridden per
// conference by sipedge:confcfg:<id>; internal/contract parses both).
type Settings struct {
	GuestsOnly time.Duration // guests_only_timeout: 0..86400 s, 0 = end at once
	Backstop   time.Duration // last_participant_timeout: 0 = never, else 60..86400 s
}

// DefaultSettings are SPEC's defaults: guests-only 60 s, no backstop.
func DefaultSettings() Settings {
	return Settings{GuestsOnly: 60 * time.Second}
}
