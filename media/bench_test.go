package media

import (
	"net/netip"
	"runtime"
	"strconv"
	"testing"
)

// BenchmarkSDPAnchor is the media cost of one call set-up and tear-down:
// Open, the caller's offer, the node's answer (one audio stream: two relay
// port pairs, four sockets and their readers) and Ended.
func BenchmarkSDPAnchor(b *testing.B) {
	in := newEnv(b).instance("A", withPairs(64))
	offer := audioSDP(netip.MustParseAddrPort("192.0.2.10:4000"), 1)
	answer := audioSDP(netip.MustParseAddrPort("198.51.100.20:5000"), 1)
	b.ReportAllocs()
	for b.Loop() {
		in.mg.Open("call-1", "conf-1", true)
		if _, err := in.mg.SDP("call-1", true, offer); err != nil {
			b.Fatal(err)
		}
		if _, err := in.mg.SDP("call-1", false, answer); err != nil {
			b.Fatal(err)
		}
		in.mg.Ended("call-1")
	}
	if n := in.mg.InUse(); n != 0 {
		b.Fatalf("ports in use after the benchmark = %d", n)
	}
}

// BenchmarkMemoryPerCall reports the Go heap and the goroutines an
// anchored call holds (one audio stream, offer and answer), measured over
// memCalls calls open at once, and the stacks of its relay goroutines.
// Kernel socket buffers are not included.
func BenchmarkMemoryPerCall(b *testing.B) {
	const memCalls = 500
	in := newEnv(b).instance("A", withPairs(memCalls*2+32)) // 4 ports per call
	offer := audioSDP(netip.MustParseAddrPort("192.0.2.10:4000"), 1)
	answer := audioSDP(netip.MustParseAddrPort("198.51.100.20:5000"), 1)
	ids := make([]string, memCalls)
	for i := range ids {
		ids[i] = "call-" + strconv.Itoa(i)
	}

	var heap, stack, goroutines float64
	runs := 0
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		for _, id := range ids {
			in.mg.Open(id, "conf-1", true)
			if _, err := in.mg.SDP(id, true, offer); err != nil {
				b.Fatal(err)
			}
			if _, err := in.mg.SDP(id, false, answer); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += float64(after.HeapInuse) - float64(before.HeapInuse)
		stack += float64(after.StackInuse) - float64(before.StackInuse)
		goroutines += float64(runtime.NumGoroutine() - g0)
		for _, id := range ids {
			in.mg.Ended(id)
		}
		runs++
	}
	b.ReportMetric(heap/float64(runs*memCalls), "heap-bytes/call")
	b.ReportMetric(stack/float64(runs*memCalls), "stack-bytes/call")
	b.ReportMetric(goroutines/float64(runs*memCalls), "goroutines/call")
	if n := in.mg.InUse(); n != 0 {
		b.Fatalf("ports in use after the benchmark = %d", n)
	}
}
