package app

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/config"
)

func TestGCFrom(t *testing.T) {
	cases := []struct {
		name          string
		gogc, limitMB int
		env           map[string]string
		want          gcSettings
	}{
		{"defaults: three quarters of max_memory_mb", config.GCDefault, 0, nil, gcSettings{GOGC: config.GCDefault, MemoryLimit: 1536 << 20}},
		{"no limit", config.GCDefault, -1, nil, gcSettings{GOGC: config.GCDefault, MemoryLimit: math.MaxInt64}},
		{"both set", 200, 512, nil, gcSettings{GOGC: 200, MemoryLimit: 512 << 20}},
		{"GOGC env wins", 200, 512, map[string]string{"GOGC": "50"},
			gcSettings{GOGC: 200, MemoryLimit: 512 << 20, FromEnvGOGC: true}},
		{"GOMEMLIMIT env wins", 200, 512, map[string]string{"GOMEMLIMIT": "1GiB"},
			gcSettings{GOGC: 200, MemoryLimit: 512 << 20, FromEnvLimit: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.GOGC, cfg.MemoryLimitMB = tc.gogc, tc.limitMB
			got := gcFrom(cfg, func(k string) string { return tc.env[k] })
			if got != tc.want {
				t.Errorf("gcFrom = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestApplyGC checks the runtime really runs with the settings, and that
// an environment variable leaves its setting alone.
func TestApplyGC(t *testing.T) {
	prevGC := debug.SetGCPercent(100)
	prevLimit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetGCPercent(prevGC); debug.SetMemoryLimit(prevLimit) })

	cfg := config.Default()
	cfg.GOGC, cfg.MemoryLimitMB = 250, 700
	applyGCWith(cfg, func(string) string { return "" }, zerolog.Nop())
	if g := debug.SetGCPercent(-1); g != 250 {
		t.Errorf("GC percent = %d, want 250", g)
	}
	debug.SetGCPercent(250)
	if l := debug.SetMemoryLimit(-1); l != 700<<20 {
		t.Errorf("memory limit = %d, want %d", l, 700<<20)
	}

	cfg.GOGC, cfg.MemoryLimitMB = 300, 900
	applyGCWith(cfg, func(k string) string { return map[string]string{"GOGC": "250", "GOMEMLIMIT": "700MiB"}[k] }, zerolog.Nop())
	if g := debug.SetGCPercent(-1); g != 250 {
		t.Errorf("GOGC set: GC percent = %d, want 250 kept", g)
	}
	debug.SetGCPercent(250)
	if l := debug.SetMemoryLimit(-1); l != 700<<20 {
		t.Errorf("GOMEMLIMIT set: memory limit = %d, want %d kept", l, 700<<20)
	}
}
