package proxy

import (
	"testing"
	"time"
)

// A timer back from the pool fires after its new duration, never with a
// value left from its earlier use.
func TestTimerPool_ReusedTimerIsFresh(t *testing.T) {
	var tp timerPool
	fired := tp.get(time.Millisecond)
	time.Sleep(5 * time.Millisecond) // fired: a value waits in its channel
	tp.put(fired)
	again := tp.get(time.Hour)
	select {
	case <-again.C:
		t.Fatal("a reused timer delivered a value from its earlier use")
	case <-time.After(20 * time.Millisecond):
	}
	tp.put(again)
	soon := tp.get(time.Millisecond)
	select {
	case <-soon.C:
	case <-time.After(time.Second):
		t.Fatal("a reused timer did not fire")
	}
	tp.put(soon)
	if raceEnabled {
		return // sync.Pool drops timers on purpose under -race
	}
	if n := testing.AllocsPerRun(100, func() { tp.put(tp.get(time.Hour)) }); n != 0 {
		t.Errorf("get and put: %v allocations, want 0", n)
	}
}
