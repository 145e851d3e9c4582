package proxy

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// The goroutines the proxy starts for work that outlives a request end
// with Serve's context even when their own context does not, Serve's wait
// returns only once they have, and after it nothing new starts.
func TestOwned_EndWithServeAndAreWaitedFor(t *testing.T) {
	p := &Proxy{}
	serveCtx, stopServe := context.WithCancel(context.Background())
	p.serveCtx.Store(&serveCtx)

	started, finished := make(chan struct{}), make(chan struct{})
	p.spawn(context.Background(), func(ctx context.Context) { // its own context never ends
		close(started)
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // still working after the cancel
		close(finished)
	})
	<-started
	stopServe()
	waited := make(chan struct{})
	go func() { p.bg.wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return: the goroutine was not cancelled with Serve's context")
	}
	select {
	case <-finished:
	default:
		t.Fatal("wait returned before the goroutine had")
	}

	var ran atomic.Bool
	p.spawn(context.Background(), func(context.Context) { ran.Store(true) })
	time.Sleep(20 * time.Millisecond)
	if ran.Load() {
		t.Error("a goroutine started after Serve had stopped")
	}
}

// A goroutine's own context still bounds it while Serve runs.
func TestOwned_OwnContextBounds(t *testing.T) {
	p := &Proxy{}
	serveCtx := context.Background()
	p.serveCtx.Store(&serveCtx)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.spawn(ctx, func(ctx context.Context) { <-ctx.Done(); close(done) })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the goroutine's own context did not end it")
	}
	p.bg.wait()
}
