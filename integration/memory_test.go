package integration

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// Issue 9, item 4: the garbage collector is paced by gogc and
// memory_limit_mb, unless GOGC / GOMEMLIMIT are set in the environment;
// the Go collector's own metrics show what the runtime really runs with.
func TestMemory_GCSettingsApplied(t *testing.T) {
	cases := []struct {
		name      string
		env       map[string]string
		args      []string
		gogc      float64
		limitByte float64
	}{
		{"defaults", nil, nil, 200, 1536 << 20}, // gogc 200; three quarters of max_memory_mb's 2048
		{"config", nil, []string{"--gogc", "150", "--memory-limit-mb", "600"}, 150, 600 << 20},
		{"GOGC env wins", map[string]string{"GOGC": "300"}, []string{"--gogc", "150", "--memory-limit-mb", "600"}, 300, 600 << 20},
		{"GOMEMLIMIT env wins", map[string]string{"GOMEMLIMIT": "700MiB"}, []string{"--gogc", "150", "--memory-limit-mb", "600"}, 150, 700 << 20},
		{"collections only at the limit", nil, []string{"--gogc", "-1", "--memory-limit-mb", "256"}, -1, 256 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v) // inherited by the sipedge process
			}
			e := newEnv(t)
			s := e.startSipedge("gc", tc.args...)
			want := tc.gogc
			if want < 0 {
				want = math.MaxUint64 // runtime/metrics reads /gc/gogc:percent as a uint64: -1 wraps
			}
			if got := s.metric(t, "go_gc_gogc_percent", nil); got != want {
				t.Errorf("go_gc_gogc_percent = %v, want %v", got, want)
			}
			if got := s.metric(t, "go_gc_gomemlimit_bytes", nil); got != tc.limitByte {
				t.Errorf("go_gc_gomemlimit_bytes = %v, want %v", got, tc.limitByte)
			}
			// The collector's and the scheduler's own figures, for reading a
			// set-up tail against GC cycles (BENCHMARKS.md "Set-up tail and GC
			// cycles"): goroutines waited to run, and what the last cycle scanned.
			if got := s.metric(t, "go_sched_latencies_seconds_count", nil); got <= 0 {
				t.Errorf("go_sched_latencies_seconds_count = %v, want > 0", got)
			}
			s.metric(t, "go_gc_scan_heap_bytes", nil) // fails the test when absent
		})
	}
}

// Calls still all succeed with the collector run only at a small memory
// limit, and every dialog is forgotten once its BYE is answered (nothing
// a finished call leaves behind is the proxy's own state).
func TestMemory_CallsAtMemoryLimitOnly(t *testing.T) {
	const calls = 200
	e := newEnv(t)
	node := e.startNode("n1")
	s := e.startSipedge("A", "--gogc", "-1", "--memory-limit-mb", "64")
	s.waitRing(t, 5*time.Second, "n1")
	res := runUAC(t, "calls", uac{Scenario: "uac_call.xml", Target: s.sipAddr(),
		Rows: callRows(s.sipAddr(), ids("mem", calls)...), Rate: 100, Hold: 20 * time.Millisecond})
	res.requireAllSucceeded(t, calls)
	if got := len(node.received(t, "BYE")); got != calls {
		t.Errorf("node received %d distinct BYEs, want %d", got, calls)
	}
	eventually(t, 5*time.Second, "no dialog held after every BYE", func() string {
		if n := s.metric(t, "sipedge_dialogs_active", nil); n != 0 {
			return fmt.Sprintf("sipedge_dialogs_active = %v", n)
		}
		return ""
	})
}
