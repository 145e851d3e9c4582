package proxy

import (
	"context"
	"log/slog"
	"strings"

	"github.com/rs/zerolog"
)

// slogBridge sends sipgo's slog records to zerolog (one log stream, one
// format) and counts the ones that mean a message from the network was
// unusable: sipgo drops unparsable datagrams and only logs them.
type slogBridge struct {
	log   zerolog.Logger
	m     *metrics
	attrs []slog.Attr
}

func newSlogBridge(log zerolog.Logger, m *metrics) *slog.Logger {
	return slog.New(&slogBridge{log: log.With().Str("component", "sipgo").Logger(), m: m})
}

func (b *slogBridge) Enabled(_ context.Context, l slog.Level) bool {
	return max(b.log.GetLevel(), zerolog.GlobalLevel()) <= zlevel(l) // the global level changes on SIGHUP
}

func (b *slogBridge) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "failed to parse") || strings.HasPrefix(r.Message, "Server tx failed to handle request") {
		b.m.sipgoErrors.Inc()
	}
	level := zlevel(r.Level)
	if level > zerolog.DebugLevel && r.Level < slog.LevelError {
		// sipgo's warnings are about peers, not about us.
		level = zerolog.DebugLevel
	}
	if level == zerolog.ErrorLevel {
		level = zerolog.WarnLevel // a bad peer message is not our error
	}
	ev := b.log.WithLevel(level)
	for _, a := range b.attrs {
		ev = ev.Str(a.Key, a.Value.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "data" {
			return true // raw message bytes: never log a whole packet
		}
		ev = ev.Str(a.Key, a.Value.String())
		return true
	})
	ev.Msg(r.Message)
	return nil
}

func (b *slogBridge) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *b
	n.attrs = append(append([]slog.Attr{}, b.attrs...), attrs...)
	return &n
}

func (b *slogBridge) WithGroup(string) slog.Handler { return b }

func zlevel(l slog.Level) zerolog.Level {
	switch {
	case l >= slog.LevelError:
		return zerolog.ErrorLevel
	case l >= slog.LevelWarn:
		return zerolog.WarnLevel
	case l >= slog.LevelInfo:
		return zerolog.InfoLevel
	default:
		return zerolog.DebugLevel
	}
}
