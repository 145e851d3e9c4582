//go:build linux

package relay

import (
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// busyRecv reads one datagram from c's socket without letting the calling
// goroutine block (no netpoller, no sleep), spinning up to d: while it
// spins, with one P, no other goroutine runs.
func busyRecv(t *testing.T, fd int, d time.Duration) bool {
	t.Helper()
	var buf [2048]byte
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd),
			uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), syscall.MSG_DONTWAIT, 0, 0)
		if errno == 0 {
			return true
		}
	}
	return false
}

func rawFD(t *testing.T, c interface {
	SyscallConn() (syscall.RawConn, error)
}) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

// With one P and the calling goroutine never blocking, the worker's
// goroutine cannot run: a packet that arrives meanwhile is relayed only
// because the caller polls.
func TestPool_PollRelaysFromTheCallingGoroutine(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := modeHarness(t, false)
	send(t, h.a.rtp, h.aRTP, rtpPkt(t, 0xa, 1, 20)) // latch, relayed by the worker
	if !waitFor(func() bool { return h.s.Stats(SideA).Packets == 1 }) {
		t.Fatal("first packet not relayed")
	}
	bfd := rawFD(t, h.b.rtp)
	if !busyRecv(t, bfd, time.Second) {
		t.Fatal("first packet did not reach B")
	}
	for i := range 5 {
		// From the send to the receive the goroutine holds the P.
		send(t, h.a.rtp, h.aRTP, rtpPkt(t, 0xa, uint16(2+i), 20))
		for start := time.Now(); time.Since(start) < 200*time.Microsecond; {
		} // on loopback: queued on the relay's socket
		h.s.pool.Poll()
		if !busyRecv(t, bfd, 2*time.Millisecond) {
			t.Fatalf("packet %d: not relayed by Poll", i)
		}
	}
	if got := h.s.Stats(SideA).Packets; got != 6 {
		t.Fatalf("Packets = %d, want 6", got)
	}
}

// Poll relays at most pollRounds bursts of a socket; what it leaves is
// relayed by the worker's goroutine without any further packet.
func TestPool_PollLeavesTheRestToTheWorker(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := modeHarness(t, false)
	// Room on the relay's A-facing RTP socket for more than Poll takes.
	afd := int(h.s.legs[SideA].ports.fd[chRTP])
	if err := unix.SetsockoptInt(afd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20); err != nil {
		t.Skipf("SO_RCVBUFFORCE: %v", err)
	}
	const n = pollRounds*readBurst + readBurst
	for i := range n {
		send(t, h.a.rtp, h.aRTP, rtpPkt(t, 0xa, uint16(i), 20))
	}
	h.s.pool.Poll() // the worker's goroutine has not run since the sends
	if got := h.s.Stats(SideA).Packets; got == n {
		t.Skip("the worker ran during the sends (a syscall lost the P)")
	} else if got < readBurst {
		t.Fatalf("Poll relayed %d, want at least a burst (%d)", got, readBurst)
	}
	if !waitFor(func() bool { return h.s.Stats(SideA).Packets == n }) {
		t.Fatalf("Packets = %d, want %d", h.s.Stats(SideA).Packets, n)
	}
}

// Poll on a pool without streams (no workers) and after the last stream
// closed does nothing and does not block.
func TestPool_PollWithoutWorkers(t *testing.T) {
	p := testPool(t, 2)
	p.Poll()
	h := modeHarness(t, false)
	_ = h.s.Close()
	h.s.pool.Poll()
	if n := h.s.pool.workers.running(); n != 0 {
		t.Fatalf("%d workers running", n)
	}
}
