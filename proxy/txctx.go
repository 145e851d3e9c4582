package proxy

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Contexts on the SIP path. Work done for a request (admission, opening
// the client transaction) runs in its server transaction's context: it is
// cancelled when that transaction terminates (answered over TCP, its RFC
// 3261 timers run out, the transport failed, the proxy shuts down: sipgo
// terminates every transaction when it closes). Work that must outlive the
// transaction (counts and participant records written asynchronously, a
// CANCEL or BYE the proxy sends on its own) runs in the proxy's Serve
// context instead: background().
//
// sipgo v1.7.3 has no tx.Context(), and its sip.ServerTransactionContext
// cancels the context at once for a live transaction (it tests
// OnTerminate's result the wrong way round), so txContext is sipedge's.

// txContext is the context of server transaction tx: Done is tx.Done().
// It allocates one small value; a context derived from it (WithTimeout)
// is cancelled through AfterFunc, without a goroutine of its own.
func txContext(tx sip.ServerTransaction) context.Context {
	if tx == nil {
		return context.Background()
	}
	return &txCtx{tx: tx}
}

type txCtx struct{ tx sip.ServerTransaction }

func (c *txCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *txCtx) Done() <-chan struct{}       { return c.tx.Done() }
func (c *txCtx) Value(any) any               { return nil }

func (c *txCtx) Err() error {
	select {
	case <-c.tx.Done():
		return context.Canceled
	default:
		return nil
	}
}

// AfterFunc runs f in its own goroutine once the transaction terminates,
// unless stop is called first (the context package uses it for contexts
// derived from this one).
func (c *txCtx) AfterFunc(f func()) (stop func() bool) {
	var fired atomic.Bool
	run := func() {
		if fired.CompareAndSwap(false, true) {
			go f()
		}
	}
	if !c.tx.OnTerminate(func(string, error) { run() }) {
		run() // already terminated
	}
	return func() bool { return fired.CompareAndSwap(false, true) }
}

// txContext is txContext(tx), made once per forwarded request: admission,
// the client transaction and every failover branch share it (it was three
// allocations per call set-up). It is set before forward starts the
// failover goroutine, which only reads it.
func (i *fwdInfo) txContext(tx sip.ServerTransaction) context.Context {
	if i.ctx == nil {
		i.ctx = txContext(tx)
	}
	return i.ctx
}

// background is the proxy's Serve context (Background before Serve runs,
// for the tests that drive handlers directly).
func (p *Proxy) background() context.Context {
	if ctx := p.serveCtx.Load(); ctx != nil {
		return *ctx
	}
	return context.Background()
}

// dialContext bounds opening the client transaction toward next: UDP sends
// from the listening socket (nothing to wait for), TCP may have to connect.
func dialContext(ctx context.Context, next hop) (context.Context, context.CancelFunc) {
	if next.transport == "udp" {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, connectTimeout)
}
