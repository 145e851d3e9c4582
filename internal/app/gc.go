package app

import (
	"math"
	"os"
	"runtime/debug"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/config"
)

// gcSettings is how the collector is paced.
type gcSettings struct {
	GOGC        int   // percent; -1 off
	MemoryLimit int64 // bytes; math.MaxInt64 none
	// FromEnv* report that the Go runtime already took the value from the
	// GOGC / GOMEMLIMIT environment variable, which wins over the config.
	FromEnvGOGC, FromEnvLimit bool
}

// gcFrom resolves the settings from the configuration and the environment
// (getenv: os.Getenv).
func gcFrom(cfg config.Config, getenv func(string) string) gcSettings {
	s := gcSettings{GOGC: cfg.GOGC, MemoryLimit: math.MaxInt64}
	if mb := cfg.MemoryLimit(); mb > 0 {
		s.MemoryLimit = int64(mb) << 20
	}
	s.FromEnvGOGC = getenv("GOGC") != ""
	s.FromEnvLimit = getenv("GOMEMLIMIT") != ""
	return s
}

// applyGC sets the collector's pacing at start-up (gogc, memory_limit_mb)
// and logs what is in force.
func applyGC(cfg config.Config, log zerolog.Logger) { applyGCWith(cfg, os.Getenv, log) }

func applyGCWith(cfg config.Config, getenv func(string) string, log zerolog.Logger) {
	s := gcFrom(cfg, getenv)
	if !s.FromEnvGOGC {
		debug.SetGCPercent(s.GOGC)
	}
	if !s.FromEnvLimit {
		debug.SetMemoryLimit(s.MemoryLimit)
	}
	// Reading back (a negative value changes nothing) gives what is in force.
	gogc := debug.SetGCPercent(-1)
	debug.SetGCPercent(gogc)
	ev := log.Info().Int("gogc", gogc).Bool("gogc_from_env", s.FromEnvGOGC).Bool("memory_limit_from_env", s.FromEnvLimit)
	if limit := debug.SetMemoryLimit(-1); limit != math.MaxInt64 {
		ev.Int64("memory_limit_mb", limit>>20)
	}
	ev.Msg("garbage collector paced")
}
