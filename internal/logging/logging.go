// Package logging builds the zerolog logger every sipedge binary uses.
package logging

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// TimeFormat is the one timestamp format of every sipedge binary's logs
// (sipedge, confnode): RFC 3339 in UTC with nanoseconds, in JSON and in
// console lines alike, so lines of several processes sort and join.
const TimeFormat = time.RFC3339Nano

// New returns a logger writing JSON lines (format "json") or human-readable
// lines (format "console") at the given level. Console lines are coloured
// only when w is a terminal.
func New(w io.Writer, format, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("log level %q: %w", level, err)
	}
	zerolog.TimeFieldFormat = TimeFormat
	zerolog.TimestampFunc = func() time.Time { return time.Now().UTC() }
	switch format {
	case "json", "":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: TimeFormat, NoColor: !IsTerminal(w)}
	default:
		return zerolog.Logger{}, fmt.Errorf("log format %q: want json or console", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// Stderr is New on os.Stderr.
func Stderr(format, level string) (zerolog.Logger, error) { return New(os.Stderr, format, level) }

// RedisLogger adapts a zerolog logger to go-redis's logger interface, so
// its messages (dial failures, pool warnings) are JSON lines like ours.
type RedisLogger struct{ Log zerolog.Logger }

// Printf implements go-redis's internal.Logging.
func (r RedisLogger) Printf(_ context.Context, format string, v ...any) {
	r.Log.Warn().Str("component", "go-redis").Msg(fmt.Sprintf(format, v...))
}

// StderrReloadable is Stderr for a daemon whose level changes at run time
// (SIGHUP): the logger passes everything and zerolog's global level, set by
// SetLevel, decides. Disabled levels still cost nothing: zerolog checks the
// global level before it builds an event.
func StderrReloadable(format, level string) (zerolog.Logger, error) {
	if err := SetLevel(level); err != nil {
		return zerolog.Logger{}, err
	}
	return New(os.Stderr, format, zerolog.TraceLevel.String())
}

// SetLevel sets the process-wide minimum level of every zerolog logger.
func SetLevel(level string) error {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	zerolog.SetGlobalLevel(lvl)
	return nil
}
