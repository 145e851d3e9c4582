package logging

import (
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// SampledBurst is how many lines of one kind a Sampled writes each second
// before sampling starts.
const SampledBurst = 10

// Sampled bounds one kind of log line under a flood: the first
// SampledBurst a second are written, then one in a thousand, each carrying
// how many were left out since the last one written. Counters stay exact
// elsewhere; only lines are sampled.
type Sampled struct {
	log        zerolog.Logger
	suppressed atomic.Int64
}

// NewSampled wraps log; one Sampled per kind of line (per reason).
func NewSampled(log zerolog.Logger) *Sampled {
	return &Sampled{log: log.Sample(&zerolog.BurstSampler{Burst: SampledBurst, Period: time.Second,
		NextSampler: &zerolog.BasicSampler{N: 1000}})}
}

// Info returns an info event to fill and send, or nil when sampled out.
func (s *Sampled) Info() *zerolog.Event {
	ev := s.log.Info()
	if ev == nil {
		s.suppressed.Add(1)
		return nil
	}
	if n := s.suppressed.Swap(0); n > 0 {
		ev = ev.Int64("suppressed", n)
	}
	return ev
}
