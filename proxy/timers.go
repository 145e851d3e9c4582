package proxy

import (
	"sync"
	"time"
)

// timerPool keeps stopped timers for reuse: time.NewTimer is three
// allocations, and every new INVITE with a retry plan waits on one
// (failoverRun). Since Go 1.23 (go.mod's go line is later) Stop and
// Reset guarantee that no value from before is received afterwards, so a
// timer from the pool is as good as a new one.
type timerPool struct{ p sync.Pool }

// get is a timer that fires after d.
func (tp *timerPool) get(d time.Duration) *time.Timer {
	if t, ok := tp.p.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// put stops t and keeps it for another get; the caller must not use t
// any more.
func (tp *timerPool) put(t *time.Timer) {
	t.Stop()
	tp.p.Put(t)
}
