package config

import "errors"

// GC defaults, chosen from the measurements in BENCHMARKS.md ("Issue 9:
// memory", and "GOGC 200 by default"). GOGC was 100 while memory was the
// larger gap to Kamailio; since the finished transactions stopped holding
// their messages, sipedge's PSS is about 0.3-0.4x Kamailio's and CPU per
// call is the binding figure, and GOGC 200 costs 2-14 % less CPU per call
// (1000 to 3000 calls/s) for about 30-40 % more PSS. The soft limit sits
// below the point where new calls get 503 (max_memory_mb), so the
// collector works harder before calls are refused, and is far above what
// the process uses in normal service.
const (
	GCDefault          = 200
	MemoryLimitDefault = 0 // three quarters of max_memory_mb
)

// MemoryLimit is the soft limit in MiB the runtime is given: 0 none.
func (c Config) MemoryLimit() int {
	switch {
	case c.MemoryLimitMB > 0:
		return c.MemoryLimitMB
	case c.MemoryLimitMB == 0 && c.MaxMemoryMB > 0:
		return c.MaxMemoryMB * 3 / 4
	}
	return 0
}

// gogc accepts -1 (collections only at the memory limit, which must then
// be set) or 10..10000 percent.
func gogc(v int, c Config) error {
	switch {
	case v == -1 && c.MemoryLimit() <= 0:
		return errors.New("-1 (no target) needs a memory limit (memory_limit_mb, or max_memory_mb), or the heap grows without bound")
	case v == -1:
		return nil
	case v < 10 || v > 10000:
		return errors.New("must be -1 or between 10 and 10000")
	}
	return nil
}
