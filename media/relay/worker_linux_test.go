//go:build linux

package relay

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// waitModes are the two ways a worker waits on its epoll instance.
var waitModes = []struct {
	name  string
	block bool
}{
	{"netpoller", false},
	{"blocking", true},
}

// modeHarness is newHarness on a pool whose workers wait as block says.
func modeHarness(t testing.TB, block bool) *harness {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p := testPool(t, 8)
	p.workers.block = block
	s, err := NewStream(context.Background(), p, Config{Metrics: m}, "call-"+t.Name(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	h := &harness{s: s, m: m, a: newParty(t), b: newParty(t)}
	h.aRTP, h.aRTCP = s.LocalA()
	h.bRTP, h.bRTCP = s.LocalB()
	h.announce()
	return h
}

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFor polls cond for up to two seconds.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func TestWorkers_StopWithTheLastStream(t *testing.T) {
	for _, mode := range waitModes {
		t.Run(mode.name, func(t *testing.T) {
			p := testPool(t, 6)
			p.workers.block = mode.block
			ep, node := newParty(t), newParty(t)
			goroutines, fds := runtime.NumGoroutine(), openFDs(t)
			for round := range 2 { // the workers start again after stopping
				var ss []*Stream
				for i := range 3 {
					s, err := NewStream(context.Background(), p, Config{}, "workers", i)
					if err != nil {
						t.Fatal(err)
					}
					s.SetPeerA(ep.addrRTP(), ep.addrRTCP(), false)
					s.SetPeerB(node.addrRTP(), node.addrRTCP(), false)
					ss = append(ss, s)
				}
				if got, want := p.workers.running(), max(1, runtime.GOMAXPROCS(0)); got != want {
					t.Fatalf("round %d: %d workers, want one per GOMAXPROCS (%d)", round, got, want)
				}
				for i, s := range ss {
					pkt := rtpPkt(t, 0xa, uint16(i), 20)
					a, _ := s.LocalA()
					send(t, ep.rtp, a, pkt)
					expect(t, node.rtp, pkt)
				}
				for _, s := range ss[:2] {
					_ = s.Close()
				}
				if p.workers.running() == 0 {
					t.Fatalf("round %d: workers stopped with a stream open", round)
				}
				_ = ss[2].Close()
				if got := p.workers.running(); got != 0 {
					t.Fatalf("round %d: %d workers after the last stream closed, want 0", round, got)
				}
				if !waitFor(func() bool { return runtime.NumGoroutine() <= goroutines }) {
					t.Fatalf("round %d: %d goroutines after the last stream closed, %d before", round, runtime.NumGoroutine(), goroutines)
				}
				if got := openFDs(t); got != fds {
					t.Fatalf("round %d: %d descriptors open after the last stream closed, %d before", round, got, fds)
				}
			}
		})
	}
}

func TestWorkers_SpreadStreamsOverWorkers(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	p := testPool(t, 12)
	per := map[*worker]int{}
	var ss []*Stream
	for i := range 6 {
		s, err := NewStream(context.Background(), p, Config{}, "spread", i)
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
		per[s.att.w]++
	}
	if len(per) != 3 {
		t.Fatalf("6 streams on %d workers, want 3", len(per))
	}
	for w, n := range per {
		if n != 2 {
			t.Fatalf("worker %p relays %d streams, want 2 each", w, n)
		}
	}
	// A stream closed frees room on its worker: the next one goes there.
	w := ss[4].att.w
	_ = ss[4].Close()
	s, err := NewStream(context.Background(), p, Config{}, "spread", 6)
	if err != nil {
		t.Fatal(err)
	}
	if s.att.w != w {
		t.Fatal("new stream not on the worker with the fewest streams")
	}
	for _, s := range append(ss, s) {
		_ = s.Close()
	}
}

// More datagrams queued on one socket than a burst takes are all handled
// without another one arriving: edge-triggered epoll reports the socket
// once (here when it is registered, already full), and the worker must
// come back to it by itself.
func TestWorker_DrainsPastABurst(t *testing.T) {
	const n = 3*readBurst/2 + 1
	for _, mode := range waitModes {
		t.Run(mode.name, func(t *testing.T) {
			p := testPool(t, 4)
			p.workers.block = mode.block
			first, err := NewStream(context.Background(), p, Config{}, "first", 0) // slots 0 and 1
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			ws := p.workers.ws
			for _, w := range ws { // the next stream binds its ports, then waits to register them
				w.mu.Lock()
			}
			opened := make(chan *Stream, 1)
			go func() {
				s, err := NewStream(context.Background(), p, Config{}, "full", 1)
				if err != nil {
					t.Error(err)
				}
				opened <- s
			}()
			ep := newParty(t)
			to := netip.AddrPortFrom(loopback, uint16(p.min+4)) // slot 2: its A-facing RTP port
			if !waitFor(func() bool { return p.InUse() == 8 }) {
				t.Fatal("second stream did not bind its ports")
			}
			for i := range n {
				send(t, ep.rtp, to, rtpPkt(t, 0xa, uint16(i), 20))
			}
			time.Sleep(20 * time.Millisecond) // all queued on loopback
			for _, w := range ws {
				w.mu.Unlock()
			}
			s := <-opened
			if s == nil {
				t.FailNow()
			}
			defer s.Close()
			if a, _ := s.LocalA(); a != to {
				t.Fatalf("second stream's A-facing port %v, want %v", a, to)
			}
			if !waitFor(func() bool { return s.Stats(SideA).Packets == n }) {
				t.Fatalf("Packets = %d, want %d", s.Stats(SideA).Packets, n)
			}
		})
	}
}

// Close under load: once it returns the stream's counters stand still (no
// packet of it is handled any more), and no packet of it leaves from a
// descriptor the kernel handed out again to the next stream's sockets.
func TestStream_CloseUnderLoadThenReuse(t *testing.T) {
	modes := []struct {
		name        string
		block, poll bool
	}{
		{"netpoller", false, false},
		{"blocking", true, false},
		{"netpoller, Poll looping beside", false, true}, // Pool.Poll racing the worker and Close
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			p := testPool(t, 8)
			p.workers.block = mode.block
			if mode.poll {
				done := make(chan struct{})
				var polling sync.WaitGroup
				polling.Go(func() {
					for {
						select {
						case <-done:
							return
						default:
							p.Poll()
						}
					}
				})
				defer polling.Wait()
				defer close(done)
			}
			m, _ := NewMetrics(nil)
			ep, node := newParty(t), newParty(t)
			var mu sync.Mutex
			from := map[uint32]netip.AddrPort{} // SSRC: the B-facing port of its stream
			var wrong []string
			var got sync.WaitGroup
			got.Go(func() { // the node checks where each packet came from
				buf := make([]byte, 2048)
				for {
					n, src, err := node.rtp.ReadFromUDPAddrPort(buf)
					if err != nil {
						return
					}
					if n < 12 {
						continue
					}
					ssrc := binary.BigEndian.Uint32(buf[8:])
					mu.Lock()
					if want := from[ssrc]; src != want {
						wrong = append(wrong, fmt.Sprintf("SSRC %#x from %v, want %v", ssrc, src, want))
					}
					mu.Unlock()
				}
			})
			for round := range 20 {
				s, err := NewStream(context.Background(), p, Config{Metrics: m}, "reuse", round)
				if err != nil {
					t.Fatal(err)
				}
				s.SetPeerA(ep.addrRTP(), ep.addrRTCP(), false)
				s.SetPeerB(node.addrRTP(), node.addrRTCP(), false)
				a, _ := s.LocalA()
				b, _ := s.LocalB()
				ssrc := uint32(0x100 + round)
				mu.Lock()
				from[ssrc] = b
				mu.Unlock()
				stop := make(chan struct{})
				var wg sync.WaitGroup
				wg.Go(func() {
					pkt := rtpPkt(t, ssrc, 0, 160)
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						binary.BigEndian.PutUint16(pkt[2:], uint16(i))
						_, _ = ep.rtp.WriteToUDPAddrPort(pkt, a) // refused once closed
					}
				})
				if !waitFor(func() bool { return s.Stats(SideA).Packets > 10 }) {
					t.Fatalf("round %d: nothing relayed", round)
				}
				_ = s.Close()
				after := s.Stats(SideA)
				time.Sleep(5 * time.Millisecond)
				close(stop)
				wg.Wait()
				if got := s.Stats(SideA); got != after {
					t.Fatalf("round %d: stats moved after Close: %+v, then %+v", round, after, got)
				}
			}
			if got := p.workers.running(); got != 0 {
				t.Fatalf("%d workers left", got)
			}
			_ = node.rtp.Close()
			got.Wait()
			for _, w := range wrong {
				t.Error(w)
			}
		})
	}
}

// BenchmarkRelayEchoBlocking is BenchmarkRelayEcho with the workers
// blocking in epoll_wait on locked threads (the alternative to parking in
// the netpoller).
func BenchmarkRelayEchoBlocking(b *testing.B) {
	p := testPool(b, 2*501)
	p.workers.block = true
	benchEcho(b, p)
}

// Many streams at once, each with one packet in flight through the relay
// and back (a shared node echoes to the B-facing port it came from): a
// wake-up the workers lose stalls a stream, and its read times out.
func TestWorkers_PingPongManyStreams(t *testing.T) {
	const streams, rounds = 50, 50
	for _, mode := range waitModes {
		for _, procs := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/GOMAXPROCS=%d", mode.name, procs), func(t *testing.T) {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
				p := testPool(t, 2*streams)
				p.workers.block = mode.block
				node := newParty(t)
				var echo sync.WaitGroup
				echo.Go(func() {
					buf := make([]byte, 2048)
					for {
						n, src, err := node.rtp.ReadFromUDPAddrPort(buf)
						if err != nil {
							return
						}
						_, _ = node.rtp.WriteToUDPAddrPort(buf[:n], src)
					}
				})
				var wg sync.WaitGroup
				for i := range streams {
					s, err := NewStream(context.Background(), p, Config{}, "pingpong", i)
					if err != nil {
						t.Fatal(err)
					}
					defer s.Close()
					ep := newParty(t)
					s.SetPeerA(ep.addrRTP(), ep.addrRTCP(), false)
					s.SetPeerB(node.addrRTP(), node.addrRTCP(), false)
					a, _ := s.LocalA()
					wg.Go(func() {
						pkt := rtpPkt(t, uint32(i), 0, 160)
						buf := make([]byte, 2048)
						for r := range rounds {
							binary.BigEndian.PutUint16(pkt[2:], uint16(r))
							if _, err := ep.rtp.WriteToUDPAddrPort(pkt, a); err != nil {
								t.Error(err)
								return
							}
							_ = ep.rtp.SetReadDeadline(time.Now().Add(3 * time.Second))
							if _, err := ep.rtp.Read(buf); err != nil {
								t.Errorf("stream %d round %d: %v", i, r, err)
								return
							}
						}
					})
				}
				wg.Wait()
				_ = node.rtp.Close()
				echo.Wait()
			})
		}
	}
}
