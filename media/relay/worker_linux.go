//go:build linux

package relay

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The relay is threaded like rtpengine: a fixed set of workers, one per
// GOMAXPROCS (at least one), each owning an epoll instance with the
// non-blocking sockets of its streams registered edge-triggered. A worker
// drains every ready socket with the recvmmsg batch and forwards with
// sendto, so one wake-up handles whatever became ready on all of its
// streams, and a call costs no goroutine (no stack for the GC to scan, no
// goroutine wake per packet). All four sockets of a stream belong to one
// worker: the sendto of a packet goes out of a socket of the same worker.
//
// How a worker waits: it parks in the runtime's netpoller on its epoll
// descriptor (an epoll fd is itself pollable) and, when that is readable,
// calls epoll_wait with a zero timeout. The alternative, a goroutine
// locked to its thread blocking in epoll_wait (withBlockingWait, kept for
// the comparison), was measured (BENCHMARKS.md, "Issue 9: relay on epoll
// workers") and not taken: a blocking system call keeps its P in the
// syscall state, so sysmon never sleeps deeply and retakes and hands off
// the P (a thread switch) for the SIP side of the process to run; with
// sipedge on one core that cost 1.5-2x the CPU per relayed packet of the
// netpoller wait, and a slower median round trip in BenchmarkRelayEcho,
// for a p99 that was at best within the noise of the shared machine.
// Parked in the netpoller, a worker is a goroutine like the SIP ones: one
// extra epoll_wait per wake-up, no extra thread.
//
// Lifetime: the workers of a pool start with its first open stream and
// stop when its last stream closes (workerSet.release), so an idle pool has
// no goroutine and no descriptor beyond its sockets.

// maxEvents is the most ready sockets one epoll_wait reports.
const maxEvents = 64

// wakeSlot marks the eventfd that stop writes to, in epoll_event.data.
const wakeSlot = -1

// workerSet is a pool's workers and how many streams they relay.
type workerSet struct {
	mu      sync.Mutex
	ws      []*worker // running while streams > 0
	streams int
	block   bool // wait in a blocking epoll_wait on a locked thread (withBlockingWait)
}

// withBlockingWait makes the pool's workers block in epoll_wait on a
// locked OS thread instead of parking in the netpoller (for comparison).
func withBlockingWait() PoolOption { return func(p *Pool) { p.workers.block = true } }

// attachment is the worker a stream is registered with.
type attachment struct {
	w *worker
}

// readerAt is where a worker knows a reader from: its slot in the worker's
// table (and in epoll_event.data, with the slot's generation, so an event
// reported for a socket that was removed meanwhile is ignored).
type readerAt struct {
	on     bool // registered with the worker's epoll
	queued bool // in the worker's pending list: a burst did not empty it
	slot   int32
}

// worker is one epoll instance and the goroutine that waits on it.
type worker struct {
	epfd, wakefd int
	file         *os.File // the epoll fd as the netpoller polls it; nil when blocking
	done         chan struct{}
	streams      int // attached, guarded by workerSet.mu

	mu      sync.Mutex // held for a round of events; attach and detach take it
	stopped bool
	socks   []*reader // by slot, nil when free
	gens    []uint32  // by slot, bumped when it is freed
	free    []int32
	pending []*reader // drained a full burst: handled again next round
	spare   []*reader
	sc      *scratch
	evs     [maxEvents]unix.EpollEvent // the worker's goroutine's epoll_wait
	pevs    [maxEvents]unix.EpollEvent // Poll's, under mu
}

// attach registers the sockets of s with the least loaded worker, starting
// the workers when s is the pool's first open stream.
func (ws *workerSet) attach(s *Stream) error {
	ws.mu.Lock()
	if len(ws.ws) == 0 {
		if err := ws.start(); err != nil {
			ws.mu.Unlock()
			return err
		}
	}
	w := ws.ws[0]
	for _, o := range ws.ws[1:] {
		if o.streams < w.streams {
			w = o
		}
	}
	w.streams++
	ws.streams++
	ws.mu.Unlock()
	s.att.w = w
	if err := w.add(s); err != nil {
		ws.release(w)
		s.att.w = nil
		return err
	}
	return nil
}

// detach removes the sockets of s from its worker's epoll. When it returns
// the worker handles no packet of s any more (not even one from an event
// it had already collected), so the sockets may close.
func (ws *workerSet) detach(s *Stream) {
	w := s.att.w
	if w == nil {
		return
	}
	w.remove(s)
	ws.release(w)
}

// running is how many workers run.
func (ws *workerSet) running() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.ws)
}

// release counts a stream off w and stops the workers after the last one.
func (ws *workerSet) release(w *worker) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w.streams--
	ws.streams--
	if ws.streams > 0 {
		return
	}
	for _, w := range ws.ws {
		w.stop()
	}
	ws.ws = nil
}

// start creates one worker per GOMAXPROCS; called with ws.mu held.
func (ws *workerSet) start() error {
	for range max(1, runtime.GOMAXPROCS(0)) {
		w, err := newWorker(ws.block)
		if err != nil {
			for _, w := range ws.ws {
				w.stop()
			}
			ws.ws = nil
			return fmt.Errorf("relay: start worker: %w", err)
		}
		ws.ws = append(ws.ws, w)
	}
	return nil
}

func newWorker(block bool) (*worker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	w := &worker{epfd: epfd, wakefd: wakefd, done: make(chan struct{}), sc: newScratch()}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		w.closeFDs()
		return nil, fmt.Errorf("epoll_ctl add eventfd: %w", err)
	}
	if block {
		go w.runBlocking()
		return w, nil
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		w.closeFDs()
		return nil, fmt.Errorf("epoll fd non-blocking: %w", err)
	}
	w.file = os.NewFile(uintptr(epfd), "relay-epoll") // owns epfd from here on
	raw, err := w.file.SyscallConn()
	if err == nil {
		// A file the netpoller does not poll refuses deadlines.
		err = w.file.SetReadDeadline(time.Time{})
	}
	if err != nil {
		w.closeFDs()
		return nil, fmt.Errorf("poll epoll fd: %w", err)
	}
	go w.runPolled(raw)
	return w, nil
}

// runPolled is the worker's goroutine parked in the netpoller: the runtime
// calls back when the epoll fd is readable, the callback handles a round
// and asks to be called again at once while work is left.
func (w *worker) runPolled(raw syscall.RawConn) {
	defer close(w.done)
	stopped := false
	onReadable := func(uintptr) bool {
		more, stop := w.round(0)
		stopped = stop
		return more || stop
	}
	for !stopped {
		if err := raw.Read(onReadable); err != nil {
			return // the fd closes only after done: not reached
		}
	}
}

// runBlocking is the worker's goroutine locked to its thread, blocking in
// epoll_wait (withBlockingWait).
func (w *worker) runBlocking() {
	defer close(w.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	timeout := -1
	for {
		more, stop := w.round(timeout)
		if stop {
			return
		}
		timeout = -1
		if more {
			timeout = 0
		}
	}
}

// stop ends the worker's goroutine and closes its descriptors. Its
// streams must have been removed.
func (w *worker) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	w.wake()
	<-w.done
	w.closeFDs()
}

// wake makes the worker's epoll instance ready (its eventfd, registered
// level-triggered), so its goroutine runs a round.
func (w *worker) wake() {
	var one [8]byte // an eventfd counter increment is a host-order uint64
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(w.wakefd, one[:])
}

// drainWake resets the eventfd, which would otherwise keep the epoll
// instance ready for ever.
func (w *worker) drainWake() {
	var buf [8]byte
	_, _ = unix.Read(w.wakefd, buf[:])
}

func (w *worker) closeFDs() {
	if w.file != nil {
		_ = w.file.Close()
	} else {
		_ = unix.Close(w.epfd)
	}
	_ = unix.Close(w.wakefd)
}

// add registers the sockets of s.
func (w *worker) add(s *Stream) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range s.rd {
		r := &s.rd[i]
		if r.ch == chRTCP && r.in.ports.mux {
			continue // a mux pair has no RTCP socket
		}
		slot := w.alloc(r)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: slot, Pad: int32(w.gens[slot])}
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, int(r.fd()), &ev); err != nil {
			w.socks[slot] = nil
			w.free = append(w.free, slot)
			w.removeLocked(s)
			port, _ := r.in.ports.Addrs()
			return fmt.Errorf("relay: epoll_ctl add port %d: %w", port.Port()+uint16(r.ch), err)
		}
		r.at.on, r.at.slot = true, slot
	}
	return nil
}

func (w *worker) alloc(r *reader) int32 {
	if n := len(w.free); n > 0 {
		slot := w.free[n-1]
		w.free = w.free[:n-1]
		w.socks[slot] = r
		return slot
	}
	w.socks = append(w.socks, r)
	w.gens = append(w.gens, 0)
	return int32(len(w.socks) - 1)
}

// remove unregisters the sockets of s; after it no round touches them.
func (w *worker) remove(s *Stream) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removeLocked(s)
}

func (w *worker) removeLocked(s *Stream) {
	queued := false
	for i := range s.rd {
		r := &s.rd[i]
		queued = queued || r.at.queued
		r.at.queued = false
		if !r.at.on {
			continue
		}
		// Out of epoll before the descriptor closes: epoll would keep a
		// closed descriptor's registration while a dup of it lived, and
		// a reused number must not inherit it.
		_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(r.fd()), nil)
		w.socks[r.at.slot] = nil
		w.gens[r.at.slot]++
		w.free = append(w.free, r.at.slot)
		r.at.on = false
	}
	if !queued {
		return
	}
	kept := w.pending[:0]
	for _, r := range w.pending {
		if r.s != s {
			kept = append(kept, r)
		}
	}
	clear(w.pending[len(kept):])
	w.pending = kept
}

// round waits up to timeout ms for ready sockets (0: not at all, -1: until
// one is) and drains them; more says work is left (a full event list, a
// socket a burst did not empty), stop that the worker is to end.
func (w *worker) round(timeout int) (more, stop bool) {
	n := w.wait(timeout, &w.evs)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return false, true
	}
	return w.handle(w.evs[:n]), false
}

// handle drains the sockets of evs and those a burst left queued, with
// w.mu held; true says work is left (see round).
func (w *worker) handle(evs []unix.EpollEvent) bool {
	cur := w.pending
	w.pending = w.spare[:0]
	for i := range evs {
		ev := &evs[i]
		slot := int(ev.Fd)
		if slot == wakeSlot {
			w.drainWake() // stop sets stopped first; Poll's wake is served below
			continue
		}
		if slot < 0 || slot >= len(w.socks) {
			continue
		}
		r := w.socks[slot]
		if r == nil || w.gens[slot] != uint32(ev.Pad) || r.at.queued {
			continue // removed since, or handled with the pending ones below
		}
		w.turn(r)
	}
	for _, r := range cur {
		r.at.queued = false
		w.turn(r)
	}
	clear(cur)
	w.spare = cur[:0]
	return len(evs) == maxEvents || len(w.pending) > 0
}

// turn drains one ready socket, queueing it for the next round if the
// burst did not empty it (edge-triggered: no new event would say so).
func (w *worker) turn(r *reader) {
	if r.drain(w.sc) {
		r.at.queued = true
		w.pending = append(w.pending, r)
	}
}

// wait is epoll_wait on the worker's instance into evs; 0 on an error
// (EINTR).
func (w *worker) wait(timeout int, evs *[maxEvents]unix.EpollEvent) int {
	var n uintptr
	var errno syscall.Errno
	if timeout == 0 {
		// Returns at once: no need to tell the scheduler (see rawio_linux.go).
		n, _, errno = syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(w.epfd),
			uintptr(unsafe.Pointer(&evs[0])), maxEvents, 0, 0, 0)
	} else {
		n, _, errno = syscall.Syscall6(unix.SYS_EPOLL_PWAIT, uintptr(w.epfd),
			uintptr(unsafe.Pointer(&evs[0])), maxEvents, uintptr(timeout), 0, 0)
	}
	if errno != 0 {
		return 0
	}
	return int(n)
}
