package redishealth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

// TestMonitor_ReadyFollowsProbes: one failed probe is a blip, FailAt in a
// row make the instance not ready (with the reason and since when), one
// success makes it ready again; the gauges follow.
func TestMonitor_ReadyFollowsProbes(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	mon, err := New(nil, Options{FailAt: 2, Now: func() time.Time { return now }}, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stall := errors.New("i/o timeout")
	steps := []struct {
		advance time.Duration
		probe   error
		ready   bool
		up      float64
		stale   float64 // seconds
	}{
		{500 * time.Millisecond, nil, true, 1, 0},
		{500 * time.Millisecond, stall, true, 1, 0.5},
		{500 * time.Millisecond, stall, false, 0, 1},
		{500 * time.Millisecond, stall, false, 0, 1.5},
		{500 * time.Millisecond, nil, true, 1, 0},
		{500 * time.Millisecond, stall, true, 1, 0.5},
	}
	for i, st := range steps {
		now = now.Add(st.advance)
		mon.Observe(st.probe)
		err := mon.Ready()
		if (err == nil) != st.ready || mon.Up() != st.ready {
			t.Fatalf("step %d: Ready() = %v, Up() = %v, want ready %v", i, err, mon.Up(), st.ready)
		}
		if err != nil && (!strings.Contains(err.Error(), "redis unreachable") || !strings.Contains(err.Error(), "i/o timeout")) {
			t.Errorf("step %d: reason %q lacks what and why", i, err)
		}
		if got := testutil.ToFloat64(mon.m.up); got != st.up {
			t.Errorf("step %d: sipedge_redis_up = %v, want %v", i, got, st.up)
		}
		if got := mon.staleness(); got != st.stale {
			t.Errorf("step %d: staleness = %v s, want %v", i, got, st.stale)
		}
	}
}
