//go:build linux

package proxy

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkFlatCall is the proxy's cost of one call set-up
// (INVITE/200/ACK) and of one call end (BYE/200) while held dialogs are
// already up, at 100, 1000 and 10 000 of them (issue 9: CPU per call set-up
// and per call end flat as the work grows). Extra calls come in batches of
// at most a tenth of the level, so the level stays within 10 % of its
// figure. cpu-ns/op is the whole process's CPU time while timed
// (CLOCK_PROCESS_CPUTIME_ID: the proxy, the caller and node peers, the
// collector). Signalling only: media anchoring is media.BenchmarkFlatCall.
func BenchmarkFlatCall(b *testing.B) {
	for _, held := range []int{100, 1000, 10000} {
		r := newCallRig(b, false)
		next := 0
		for range held {
			r.setUp(next, false)
			next++
		}
		if got := r.px.ActiveDialogs(); got != held {
			b.Fatalf("dialogs held = %d, want %d", got, held)
		}
		batch := max(1, min(held/10, 500))
		b.Run(fmt.Sprintf("held=%d/setup", held), func(b *testing.B) {
			var cpu time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(batch, b.N-done)
				first := next
				c0 := processCPU()
				b.StartTimer()
				for range n {
					r.setUp(next, true)
					next++
				}
				b.StopTimer()
				cpu += processCPU() - c0
				for i := range n {
					r.hangUp(first+i, r.routes[i])
				}
				r.routes = r.routes[:0]
				done += n
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
		b.Run(fmt.Sprintf("held=%d/end", held), func(b *testing.B) {
			var cpu time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(batch, b.N-done)
				b.StopTimer()
				first := next
				for range n {
					r.setUp(next, true)
					next++
				}
				c0 := processCPU()
				b.StartTimer()
				for i := range n {
					r.hangUp(first+i, r.routes[i])
				}
				b.StopTimer()
				cpu += processCPU() - c0
				r.routes = r.routes[:0]
				done += n
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
		if got := r.px.ActiveDialogs(); got != held {
			b.Fatalf("dialogs held after the level = %d, want %d", got, held)
		}
	}
}

// processCPU is the CPU time the whole process has used.
func processCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
