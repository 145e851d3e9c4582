package logging

import "github.com/rs/zerolog"

// Outage logs a repeated operation's failures once per outage: the first
// failure at warn, the first success after it at info, nothing in between,
// so a Redis outage gives two lines however long it lasts. Not safe for
// concurrent use: one loop owns it.
type Outage struct {
	log            zerolog.Logger
	failMsg, okMsg string
	failing        bool
}

// NewOutage returns an Outage writing failMsg (with the error) and okMsg.
func NewOutage(log zerolog.Logger, failMsg, okMsg string) *Outage {
	return &Outage{log: log, failMsg: failMsg, okMsg: okMsg}
}

// Note records one attempt's result; it reports whether it failed.
func (o *Outage) Note(err error) bool {
	switch {
	case err != nil && !o.failing:
		o.log.Warn().Err(err).Msg(o.failMsg)
		o.failing = true
	case err == nil && o.failing:
		o.log.Info().Msg(o.okMsg)
		o.failing = false
	}
	return err != nil
}
