package media

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sipedge/sipedge/media/policy"
)

// Settings are the media fields of sipedge:settings.
type Settings struct {
	MediaTimeout time.Duration // silence that ends a participant (1..86400 s)
	Policy       policy.Settings
}

// FieldMediaTimeout is the sipedge:settings field of Settings.MediaTimeout.
const FieldMediaTimeout = "media_timeout"

// ParseSettings reads the media fields of a settings hash over base. A bad
// field keeps base's value and is reported.
func ParseSettings(base Settings, fields map[string]string) (Settings, []policy.FieldError) {
	out := base
	var errs []policy.FieldError
	out.Policy, errs = policy.ParseSettings(base.Policy, fields)
	if v, ok := fields[FieldMediaTimeout]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		switch {
		case err != nil:
			errs = append(errs, policy.FieldError{Field: FieldMediaTimeout, Value: v, Err: policy.ErrNotSeconds})
		case n < 1 || n > 86400:
			errs = append(errs, policy.FieldError{Field: FieldMediaTimeout, Value: v,
				Err: fmt.Errorf("%w: want 1..86400", policy.ErrOutOfRange)})
		default:
			out.MediaTimeout = time.Duration(n) * time.Second
		}
	}
	return out, errs
}

// settingsCache holds the global settings, re-read every second; a bad
// value is logged once per change of the raw hash.
type settingsCache struct {
	mu      sync.Mutex
	current Settings
	lastRaw string
	readAt  time.Time
	// defaults replaced at run time (SetDefaults); nil: Options.Defaults.
	defaults *Settings
}

func (c *settingsCache) get() Settings {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// refresh re-reads sipedge:settings when the last read is older than 1 s.
func (mg *Manager) refreshSettings(ctx context.Context, now time.Time) {
	c := &mg.settings
	c.mu.Lock()
	due := now.Sub(c.readAt) >= time.Second
	c.mu.Unlock()
	if !due {
		return
	}
	fields, err := mg.opts.Redis.HGetAll(ctx, mg.opts.Keys.Settings()).Result()
	if err != nil {
		mg.redisError("read settings", err)
		return
	}
	s, errs := ParseSettings(mg.currentDefaults(), fields)
	raw := fmt.Sprint(fields)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readAt = now
	if raw == c.lastRaw {
		return
	}
	c.lastRaw = raw
	for _, e := range errs {
		mg.m.badValues.Inc()
		mg.log.Error().Str("key", mg.opts.Keys.Settings()).Str("field", e.Field).Str("value", e.Value).
			Err(e.Err).Msg("bad setting ignored, last good value kept")
		// keep the last good value of that field, not the default
		switch e.Field {
		case FieldMediaTimeout:
			s.MediaTimeout = c.current.MediaTimeout
		case policy.FieldGuestsOnly:
			s.Policy.GuestsOnly = c.current.Policy.GuestsOnly
		case policy.FieldBackstop:
			s.Policy.Backstop = c.current.Policy.Backstop
		}
	}
	c.current = s
}
