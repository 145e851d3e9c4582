//go:build linux

package media

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
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
// pairs). RLIMIT_NOFILE here is 20000 hard, and it cannot be raised
// without CAP_SYS_RESOURCE, so at most flatAnchored calls are anchored;
// the others of a level above that are joined participants without media
// (same session, conference and loop bookkeeping, no sockets). The figures
// say which.

// flatAnchored is how many held calls have relay ports (4 sockets each).
const flatAnchored = 4000

// flatBatch is the most calls set up or ended between two flushes.
const flatBatch = 200

var flatLevels = []int{100, 1000, 4000, 10000}

// The relay port range of every level: 11 384 pairs, 8 400 needed at most.
const flatPortMin, flatPortMax = 10000, 32767

type flatFixture struct {
	in            *instance
	offer, answer []byte
	next          int
	batch         int
}

func newFlatFixture(b *testing.B, held int) *flatFixture {
	b.Helper()
	raiseNoFile(b)
	anchored := min(held, flatAnchored)
	if pairs := 2 * (anchored + flatBatch); pairs > (flatPortMax-flatPortMin+1)/2 {
		b.Fatalf("%d port pairs do not fit %d-%d", pairs, flatPortMin, flatPortMax)
	}
	// Below the kernel's ephemeral ports (32768 up), where other processes'
	// UDP sockets would make binds fail and be retried: at every level the
	// same range, with room to spare.
	pool, err := relay.NewPool(netip.MustParseAddr("127.0.0.1"), flatPortMin, flatPortMax)
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
		name := fmt.Sprintf("held=%d/anchored=%d", held, min(held, flatAnchored))
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
		b.Run(fmt.Sprintf("held=%d/anchored=%d", held, min(held, flatAnchored)), func(b *testing.B) {
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

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit.
func raiseNoFile(b *testing.B) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		b.Fatal(err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			b.Logf("raise RLIMIT_NOFILE: %v", err)
		}
	}
	if need := uint64(4*(flatAnchored+flatBatch) + 1000); rl.Cur < need {
		b.Skipf("RLIMIT_NOFILE %d below the %d sockets the levels need", rl.Cur, need)
	}
}
