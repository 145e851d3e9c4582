package view

import (
	"sync"
	"time"
)

// Window turns a counter's running total into its increase over the last
// minute: the "per minute" figures of a view. Totals are sampled by Add
// (once a publish); samples older than a minute are dropped.
type Window struct {
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at    time.Time
	total float64
}

// Add records total at now and returns its increase over the last minute
// (since the oldest sample kept; a counter reset counts from zero).
func (w *Window) Add(now time.Time, total float64) float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples = append(w.samples, sample{at: now, total: total})
	cut := 0
	for cut < len(w.samples)-1 && now.Sub(w.samples[cut].at) > time.Minute {
		cut++
	}
	w.samples = w.samples[cut:]
	first := w.samples[0].total
	if total < first { // the process restarted its counters
		return total
	}
	return total - first
}
