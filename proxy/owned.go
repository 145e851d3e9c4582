package proxy

import (
	"context"
	"sync"
)

// owned are the goroutines the proxy starts for work that outlives the
// request that caused it: sipedge's own BYEs and CANCELs, the late ACK and
// BYE of a failover, a participant's join, the listeners and the sweeps.
// Serve is their owner: each runs under a context that ends with Serve's,
// and Serve returns only once every one has returned. Transaction work
// (sipgo's handler goroutines, the relay loop and its failover) ends with
// its transaction instead.
type owned struct {
	mu     sync.Mutex
	wg     sync.WaitGroup
	closed bool
}

// add counts one more goroutine, or reports false once Serve has stopped.
func (o *owned) add() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	o.wg.Add(1)
	return true
}

// wait refuses new goroutines and waits for the running ones.
func (o *owned) wait() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.wg.Wait()
}

// spawn runs f in an owned goroutine under ctx, cancelled as well when
// Serve's context ends. After Serve has returned it runs nothing: the
// work would go nowhere (the user agent is closed).
func (p *Proxy) spawn(ctx context.Context, f func(ctx context.Context)) {
	if !p.bg.add() {
		return
	}
	go func() {
		defer p.bg.wg.Done()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(p.background(), cancel)()
		f(ctx)
	}()
}
