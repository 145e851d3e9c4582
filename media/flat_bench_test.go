//go:build linux

package media

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sipedge/sipedge/media/relay"
)

// Cost per call as the number of calls up grows (issue 9: CPU per call
// set-up and per call end within 10 % at 100 and at 10 000 concurrent
// anchored calls).
//
// Each level holds `held` calls up in one Manager (real relay ports, real
// Redis scripts against miniredis), then times the set-up (Open, the
// caller's offer, the node's answer, Joined) and the end (Ended) of further
// calls at that level, in batches of at most flatBatch so the level stays
// within 10 % of its figure. Between batches, with the timer stopped, the
// queued record changes are flushed, as the loop does (the loop's periodic
// pass is BenchmarkFlatTick).
// Besides ns/op and allocs/op (exact: nothing else runs while timed) it
// reports cpu-ns/op, the CPU time of the whole process while timed
// (CLOCK_PROCESS_CPUTIME_ID).
//
// File descriptors: every anchored call binds 4 UDP sockets (two port
// pairs), so a level anchors as many of its calls as RLIMIT_NOFILE allows
// (flatAnchored; all 10 000 where the hard limit is above about 42 000).
// Where it is 20 000 hard, as on the machine of BENCHMARKS.md (raising it
// needs CAP_SYS_RESOURCE), that is 4 500: the other calls of a level above
// that are joined participants without media (same session, conference
// and loop bookkeeping, no sockets). The sub-benchmark names say which.

// flatBatch is the most calls set up or ended between two flushes.
const flatBatch = 200

var flatLevels = []int{100, 1000, 4000, 10000}

// flatPortMin is the bottom of the relay port range of every level.
const flatPortMin = 10000

var flatLimit struct {
	once     sync.Once
	anchored int // how many held calls have relay ports, at most
	portMax  int // the top of the relay port range
	why      string
}

// flatAnchored is how many of held calls are anchored (4 sockets each).
func flatAnchored(held int) int {
	flatLimit.once.Do(func() {
		nofile := raiseNoFile()
		// 1000 descriptors for everything else; the batch set up on top.
		n := (int(min(nofile, 1<<20))-1000)/4 - flatBatch
		n = min(n/100*100, flatLevels[len(flatLevels)-1])
		if n < 100 {
			flatLimit.why = fmt.Sprintf("RLIMIT_NOFILE %d leaves room for fewer than 100 anchored calls", nofile)
			return
		}
		flatLimit.anchored = n
		// Below the kernel's ephemeral ports (32768 up) while the level
		// fits there, so other processes' UDP sockets make no bind fail
		// and be retried; above, with 15 % to spare for those retries.
		flatLimit.portMax = 32767
		if ports := 4 * (n + flatBatch); ports > (flatLimit.portMax-flatPortMin+1)*9/10 {
			flatLimit.portMax = min(65535, flatPortMin+ports*115/100)
		}
	})
	return min(held, flatLimit.anchored)
}

type flatFixture struct {
	in            *instance
	offer, answer []byte
	next          int
	batch         int
}

func newFlatFixture(b *testing.B, held int) *flatFixture {
	b.Helper()
	anchored := flatAnchored(held)
	if flatLimit.why != "" {
		b.Skip(flatLimit.why)
	}
	pool, err := relay.NewPool(netip.MustParseAddr("127.0.0.1"), flatPortMin, flatLimit.portMax)
	if err != nil {
		b.Fatal(err)
	}
	in := newEnv(b).instance("A", rulesOptions(24*time.Hour, 0), func(s *setup) { s.Pool = pool })
	fx := &flatFixture{in: in, batch: max(1, min(held/10, flatBatch)),
		offer:  audioSDP(netip.MustParseAddrPort("192.0.2.10:4000"), 1),
		answer: audioSDP(netip.MustParseAddrPort("198.51.100.20:5000"), 1)}
	e := in.e
	for i := range held {
		id := fx.id()
		e.newConf("conf-"+id, "") // as admission does on the INVITE
		in.mg.Open(id, "conf-"+id, true)
		if i < anchored {
			fx.anchor(b, id)
		}
		in.mg.Joined(context.Background(), fx.join(id))
		if i%flatBatch == 0 {
			in.flush()
		}
	}
	in.flush()
	in.tick(true)
	if got := in.mg.Sessions(); got != held {
		b.Fatalf("sessions held = %d, want %d", got, held)
	}
	return fx
}

func (fx *flatFixture) id() string {
	fx.next++
	return "flat-" + strconv.Itoa(fx.next)
}

func (fx *flatFixture) join(id string) Join {
	return Join{CallID: id, ConfID: "conf-" + id, AOR: id + "@example.com", Role: "host"}
}

func (fx *flatFixture) anchor(b *testing.B, id string) {
	if _, err := fx.in.mg.SDP(id, true, fx.offer); err != nil {
		b.Fatal(err)
	}
	if _, err := fx.in.mg.SDP(id, false, fx.answer); err != nil {
		b.Fatal(err)
	}
}

// setUp is one call's media set-up as the proxy drives it.
func (fx *flatFixture) setUp(b *testing.B, id string) {
	fx.in.mg.Open(id, "conf-"+id, true)
	fx.anchor(b, id)
	fx.in.mg.Joined(context.Background(), fx.join(id))
}

// close ends every call of the level: its sockets are free for the next.
func (fx *flatFixture) close() {
	for _, s := range fx.in.mg.snapshot() {
		fx.in.mg.Ended(s.callID)
	}
	fx.in.flush()
}

// settle sends, untimed, the record changes the loop's flush would.
func (fx *flatFixture) settle() { fx.in.flush() }

func BenchmarkFlatCall(b *testing.B) {
	for _, held := range flatLevels {
		var fx *flatFixture // built by the first sub-benchmark not filtered out
		parent := b
		level := func() *flatFixture {
			if fx == nil {
				fx = newFlatFixture(parent, held)
			}
			return fx
		}
		name := fmt.Sprintf("held=%d/anchored=%d", held, flatAnchored(held))
		b.Run(name+"/setup", func(b *testing.B) {
			fx := level()
			var cpu procCPU
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(fx.batch, b.N-done)
				ids := make([]string, n)
				for i := range ids {
					ids[i] = fx.id()
				}
				cpu.start()
				b.StartTimer()
				for _, id := range ids {
					fx.setUp(b, id)
				}
				b.StopTimer()
				cpu.stop()
				fx.settle()
				for _, id := range ids {
					fx.in.mg.Ended(id)
				}
				fx.settle()
				done += n
			}
			cpu.report(b)
		})
		b.Run(name+"/end", func(b *testing.B) {
			fx := level()
			var cpu procCPU
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(fx.batch, b.N-done)
				b.StopTimer()
				ids := make([]string, n)
				for i := range ids {
					ids[i] = fx.id()
					fx.setUp(b, ids[i])
				}
				fx.settle()
				cpu.start()
				b.StartTimer()
				for _, id := range ids {
					fx.in.mg.Ended(id)
				}
				b.StopTimer()
				cpu.stop()
				fx.settle()
				done += n
			}
			cpu.report(b)
		})
		if fx == nil {
			continue
		}
		if got := fx.in.mg.Sessions(); got != held {
			b.Fatalf("sessions after the level = %d, want %d", got, held)
		}
		fx.close()
	}
}

// BenchmarkFlatTick is the loop's periodic pass at each level: one full
// tick (presence of every participant, the media_stats write, an
// evaluation of every local conference; here one per call). It reports
// the time per held call: flat means the pass is linear in the calls.
func BenchmarkFlatTick(b *testing.B) {
	for _, held := range flatLevels {
		parent := b
		b.Run(fmt.Sprintf("held=%d/anchored=%d", held, flatAnchored(held)), func(b *testing.B) {
			fx := newFlatFixture(parent, held)
			defer fx.close()
			var cpu procCPU
			b.ReportAllocs()
			cpu.start()
			for b.Loop() {
				fx.in.tick(true)
			}
			cpu.stop()
			cpu.report(b)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(held), "ns/held-call")
		})
	}
}

// procCPU sums the CPU time of the whole process (every thread: the
// relay goroutines a call starts and stops, the garbage collector) over
// start/stop pairs. Nothing else runs while it counts: the loop is not
// started, the relay sockets see no packet and miniredis no command.
type procCPU struct {
	t0, sum time.Duration
}

func processTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

func (c *procCPU) start() { c.t0 = processTime() }

func (c *procCPU) stop() { c.sum += processTime() - c.t0 }

func (c *procCPU) report(b *testing.B) {
	b.ReportMetric(float64(c.sum.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit and returns
// the soft limit it ends with.
func raiseNoFile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	if rl.Cur < rl.Max {
		up := rl
		up.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up); err == nil {
			rl = up
		}
	}
	return rl.Cur
}
