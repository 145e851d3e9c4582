//go:build linux

package media

import (
	"context"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// busyReceived reports whether p's socket holds a datagram within d,
// without the calling goroutine blocking: while it spins, with one P, the
// relay's worker cannot run.
func busyReceived(tb testing.TB, p *party, d time.Duration) bool {
	tb.Helper()
	rc, err := p.conn.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	var buf [2048]byte
	got := false
	for deadline := time.Now().Add(d); !got && time.Now().Before(deadline); {
		_ = rc.Control(func(fd uintptr) {
			_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
				uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), syscall.MSG_DONTWAIT, 0, 0)
			got = errno == 0
		})
	}
	return got
}

// A pass of the loop relays what arrived while it computes: with one P the
// relay's worker cannot run until the pass blocks, so the pass polls the
// relay (the first session's turn polls). The pass here does no Redis
// round trip (the call has not joined), so nothing else lets the worker
// in.
func TestTick_PollsTheRelay(t *testing.T) {
	e := newEnv(t)
	in := e.instance("sipedge-1")
	c := in.call(t, "call-poll", "conf-poll")
	c.nodeSends(t)         // the relay is running and delivers to the endpoint
	in.endpointSends(t, c) // latches side A
	if !busyReceived(t, c.node, time.Second) {
		t.Fatal("first packet did not reach the node")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for i := range 5 {
		c.epSeq++
		c.endpoint.send(t, c.relayA, rtpPacket(t, 0xA, c.epSeq))
		for start := time.Now(); time.Since(start) < 200*time.Microsecond; {
		} // on loopback: queued on the relay's socket
		in.mg.tick(context.Background(), e.clock.Now(), false)
		if !busyReceived(t, c.node, 2*time.Millisecond) {
			t.Fatalf("packet %d: not relayed during the pass", i)
		}
	}
}
