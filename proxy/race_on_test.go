//go:build race

package proxy

// raceEnabled: the race detector is on. sync.Pool then drops a share of
// what is put back on purpose, so allocation counts of pooled paths are
// not exact.
const raceEnabled = true
