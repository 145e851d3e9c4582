package app

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/internal/logging"
	"github.com/sipedge/sipedge/media"
)

// Control is what the daemon's main hands Run besides the configuration:
// the process signals and a way to read the configuration again.
type Control struct {
	// Signals: SIGHUP reloads; SIGTERM or SIGINT drains, then stops; a
	// second SIGTERM or SIGINT stops at once. Nil: Run stops with its ctx.
	Signals <-chan os.Signal
	// Reload reads the configuration again (file, environment, flags).
	Reload func() (config.Config, error)
}

// firstControl is Run's optional Control (none: stop with the context).
func firstControl(ctl []Control) Control {
	if len(ctl) == 0 {
		return Control{}
	}
	return ctl[0]
}

// errStopped ends Run's errgroup after a drain: a planned stop, not a failure.
var errStopped = errors.New("stopped by signal")

// reloadable lists the settings a SIGHUP applies; every other change is
// logged and needs a restart.
var reloadable = map[string]bool{
	"log_level": true, "retry_after": true, "drain_timeout": true, "drain_action": true, "slow_start": true,
	"trusted_networks": true, "shutdown_grace": true,
	"media_timeout": true, "guests_only_timeout": true, "last_participant_timeout": true,
}

// isSecret: a setting whose value is never written to the log (every key
// naming a secret: route_secret, route_secret_prev, node_secret, ...).
func isSecret(field string) bool { return strings.Contains(field, "secret") }

// lifecycle handles the signals: it owns the running configuration.
type lifecycle struct {
	cfg   config.Config
	log   zerolog.Logger
	admit interface {
		SetShuttingDown(bool)
	}
	state interface{ SetDefaults(admission.Settings) }
	media interface{ SetDefaults(media.Settings) } // nil: anchoring off
	// dialogs counts the dialogs this instance carries (set up here and
	// not ended here).
	dialogs func() int
	trusted func([]netip.Prefix) // replaces the trusted networks
	beat    func()               // publishes the instance state now
	poll    time.Duration        // how often the drain counts dialogs
	// certs re-reads the TLS certificate files (nil: no TLS listener).
	certs interface{ Reload() (time.Time, error) }
	// nodeCA re-reads node_tls_ca and swaps the pool (nil: none configured).
	nodeCA interface {
		Reload() (changed bool, err error)
	}
}

// run serves ctl until ctx ends (nil) or a drain finished (errStopped).
func (l *lifecycle) run(ctx context.Context, ctl Control) error {
	if ctl.Signals == nil {
		<-ctx.Done()
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case sig := <-ctl.Signals:
			if sig == syscall.SIGHUP {
				l.reload(ctl.Reload)
				continue
			}
			return l.drain(ctx, ctl, sig)
		}
	}
}

// drain stops admitting new dialogs and waits for this instance's dialogs
// to end, for at most shutdown_grace. It logs each step.
func (l *lifecycle) drain(ctx context.Context, ctl Control, sig os.Signal) error {
	grace, start := l.cfg.ShutdownGrace, time.Now()
	l.admit.SetShuttingDown(true)
	l.beat()
	n := l.dialogs()
	l.log.Warn().Str("signal", sig.String()).Int("dialogs", n).Stringer("grace", grace).
		Msg("shutdown: drain started: new dialogs answered 503, in-dialog requests pass")
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	every := l.poll
	if every <= 0 {
		every = 200 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	logged, loggedN := start, n
	for {
		if n == 0 {
			l.log.Info().Str("reason", "dialogs ended").Stringer("after", time.Since(start)).
				Msg("shutdown: no dialogs left, exiting")
			return errStopped
		}
		select {
		case <-ctx.Done():
			return nil
		case s := <-ctl.Signals:
			if s == syscall.SIGHUP {
				l.reload(ctl.Reload)
				continue
			}
			l.log.Warn().Str("signal", s.String()).Str("reason", "second signal").Int("dialogs", n).
				Msg("shutdown: second signal, exiting now")
			return errStopped
		case <-deadline.C:
			l.log.Warn().Str("reason", "grace period over").Int("dialogs", n).Stringer("grace", grace).
				Msg("shutdown: grace period over, exiting with dialogs up")
			return errStopped
		case <-tick.C:
			n = l.dialogs()
			since := time.Since(logged)
			if (n != loggedN && since >= time.Second) || since >= 5*time.Second {
				l.log.Info().Int("dialogs", n).Stringer("elapsed", time.Since(start)).
					Dur("left", grace-time.Since(start)).Msg("shutdown: waiting for dialogs to end")
				logged, loggedN = time.Now(), n
			}
		}
	}
}

// reload reads the configuration again, applies what can change at run
// time and logs every changed field. A bad configuration changes nothing.
func (l *lifecycle) reload(read func() (config.Config, error)) {
	if read == nil {
		return
	}
	next, err := read()
	if err != nil {
		l.log.Error().Err(err).Msg("reload: configuration rejected, the running one is kept")
		return
	}
	applied, ignored := 0, 0
	for _, ch := range configChanges(l.cfg, next) {
		ev := l.log.Info()
		if !reloadable[ch.field] {
			ev = l.log.Warn()
		}
		ev = ev.Str("field", ch.field)
		if isSecret(ch.field) {
			ev = ev.Str("old", "(secret)").Str("new", "(secret)")
		} else {
			ev = ev.Str("old", ch.old).Str("new", ch.new)
		}
		if !reloadable[ch.field] {
			ignored++
			ev.Msg("reload: setting changed but needs a restart; running value kept")
			continue
		}
		applied++
		ev.Msg("reload: setting changed")
	}
	// Apply the reloadable fields; the others keep their running values.
	cur := l.cfg
	cur.LogLevel, cur.RetryAfter = next.LogLevel, next.RetryAfter
	cur.DrainTimeout, cur.DrainAction, cur.SlowStart = next.DrainTimeout, next.DrainAction, next.SlowStart
	cur.TrustedNetworks, cur.ShutdownGrace = next.TrustedNetworks, next.ShutdownGrace
	cur.MediaTimeout, cur.GuestsOnlyTimeout, cur.LastParticipantTimeout = next.MediaTimeout, next.GuestsOnlyTimeout, next.LastParticipantTimeout
	if err := l.apply(cur); err != nil {
		l.log.Error().Err(err).Msg("reload: configuration rejected, the running one is kept")
		return
	}
	l.cfg = cur
	if l.certs != nil {
		if exp, err := l.certs.Reload(); err != nil {
			l.log.Error().Err(err).Msg("reload: TLS certificate rejected, the one in use is kept")
		} else {
			l.log.Info().Time("not_after", exp).Msg("reload: TLS certificate re-read")
		}
	}
	if l.nodeCA != nil { // internal/app/nodetls.go
		switch changed, err := l.nodeCA.Reload(); {
		case err != nil:
			l.log.Error().Err(err).Msg("reload: node TLS CA rejected, the pool in use is kept")
		case changed:
			l.log.Info().Str("field", "node_tls_ca").Msg("reload: node TLS CA swapped; new connections to nodes are verified against it")
		default:
			l.log.Info().Msg("reload: node TLS CA re-read, unchanged")
		}
	}
	l.log.Info().Int("applied", applied).Int("need_restart", ignored).Msg("reload: configuration re-read")
}

// apply pushes the run-time settings of cfg into the running parts.
func (l *lifecycle) apply(cfg config.Config) error {
	nets, err := config.TrustedPrefixes(cfg.TrustedNetworks)
	if err != nil {
		return fmt.Errorf("trusted_networks: %w", err) // validated by Load: not expected
	}
	if err := logging.SetLevel(cfg.LogLevel); err != nil {
		return err
	}
	l.state.SetDefaults(stateDefaults(cfg))
	if l.media != nil {
		l.media.SetDefaults(mediaDefaults(cfg))
	}
	if l.trusted != nil {
		l.trusted(nets)
	}
	return nil
}

type configChange struct{ field, old, new string }

// configChanges lists the fields (by YAML key) whose values differ.
func configChanges(old, next config.Config) []configChange {
	var out []configChange
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(next)
	t := ov.Type()
	for i := 0; i < t.NumField(); i++ {
		a, b := fmt.Sprint(ov.Field(i).Interface()), fmt.Sprint(nv.Field(i).Interface())
		if a != b {
			out = append(out, configChange{field: t.Field(i).Tag.Get("yaml"), old: a, new: b})
		}
	}
	return out
}
