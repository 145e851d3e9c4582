package media

import "time"

// SetDefaults replaces the YAML defaults of the sipedge:settings fields
// while sipedge runs (SIGHUP); values set in Redis still override them.
// They apply at the next settings refresh (within a second).
func (mg *Manager) SetDefaults(d Settings) {
	c := &mg.settings
	c.mu.Lock()
	c.defaults = &d
	c.lastRaw, c.readAt = "", time.Time{}
	c.mu.Unlock()
}

func (mg *Manager) currentDefaults() Settings {
	c := &mg.settings
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.defaults != nil {
		return *c.defaults
	}
	return mg.opts.Defaults
}
