package media

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/media/policy"
)

// Settings are the media fields of sipedge:settings.
type Settings struct {
	MediaTimeout time.Duration // silence that ends a participant (1..86400 s)
	Policy       policy.Settings
}

// FieldMediaTimeout is the sipedge:settings field of Settings.MediaTimeout.
const FieldMediaTimeout = contract.SettingMediaTimeout

// mediaFields are the sipedge:settings fields the media rules read.
var mediaFields = []string{contract.SettingMediaTimeout, contract.SettingGuestsOnly, contract.SettingBackstop}

func toContract(s Settings) contract.Settings {
	c := contract.DefaultSettings()
	c.MediaTimeout, c.GuestsOnly, c.Backstop = s.MediaTimeout, s.Policy.GuestsOnly, s.Policy.Backstop
	return c
}

func fromContract(c contract.Settings) Settings {
	return Settings{MediaTimeout: c.MediaTimeout, Policy: policy.Settings{GuestsOnly: c.GuestsOnly, Backstop: c.Backstop}}
}

// ParseSettings reads the media fields of a settings hash over base (the
// contract package validates them). A bad field keeps base's value and is
// reported; the other fields of sipedge:settings are not the media rules'.
func ParseSettings(base Settings, fields map[string]string) (Settings, []*contract.FieldError) {
	return parseSettings(keys.New(""), base, base, fields)
}

func parseSettings(k keys.Keys, defaults, last Settings, fields map[string]string) (Settings, []*contract.FieldError) {
	c, errs := contract.ParseSettings(k, toContract(defaults), toContract(last), fields)
	errs = slices.DeleteFunc(errs, func(e *contract.FieldError) bool { return !slices.Contains(mediaFields, e.Field) })
	return fromContract(c), errs
}

// settingsCache holds the global settings: taken from the shared contract
// snapshot (Options.State) at every tick, or, without one, re-read from
// Redis every second with a bad value logged once per change of the raw
// hash.
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

// refreshSettings takes the settings of the shared snapshot (parsed and
// validated by the contract watcher, which logs bad values), or without
// one re-reads sipedge:settings when the last read is older than 1 s.
func (mg *Manager) refreshSettings(ctx context.Context, now time.Time) {
	c := &mg.settings
	if mg.opts.State != nil {
		s := fromContract(mg.opts.State().Settings)
		c.mu.Lock()
		c.current, c.readAt = s, now
		c.mu.Unlock()
		return
	}
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
	raw, defaults := fmt.Sprint(fields), mg.currentDefaults()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readAt = now
	if raw == c.lastRaw {
		return
	}
	c.lastRaw = raw
	s, errs := parseSettings(mg.opts.Keys, defaults, c.current, fields) // a bad field keeps its last good value
	for _, e := range errs {
		mg.m.badValues.Inc()
		mg.log.Error().Str("key", e.Key).Str("field", e.Field).Str("value", e.Value).
			Err(e).Msg("bad setting ignored, last good value kept")
	}
	c.current = s
}
