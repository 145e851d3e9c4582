package config

import "errors"

// GC defaults, chosen from the sipp runs in BENCHMARKS.md ("Issue 9:
// memory").
const (
	GCDefault          = 100
	MemoryLimitDefault = 0
)

// gogc accepts -1 (collections only at the memory limit, which must then
// be set) or 10..10000 percent.
func gogc(v, limitMB int) error {
	switch {
	case v == -1 && limitMB <= 0:
		return errors.New("-1 (no target) needs memory_limit_mb > 0, or the heap grows without bound")
	case v == -1:
		return nil
	case v < 10 || v > 10000:
		return errors.New("must be -1 or between 10 and 10000")
	}
	return nil
}
