package sip

import (
	"sync"
	"time"
)

// sipedge patch (third_party/sipgo/SIPEDGE.md): upstream starts a new
// goroutine for every message the transport layer passes up
// (handleMessage). A new goroutine starts on the runtime's small initial
// stack, and the transaction layer and its handler outgrow it: at 250
// calls/s sipedge counted 8 goroutines started and 2.9 stack growths per
// call, each growth copying the stack and looking up every frame's tables
// on a cold cache. msgWorkers runs the same handling on goroutines that
// outlive one message and keep their grown stacks.
//
// Nothing else changes: a worker blocked (a client transaction passing a
// response up to a handler that is not reading yet, a request handler
// waiting for its final response) is simply busy, and the next message gets
// another worker, started if none is idle, exactly as it would have got a
// goroutine. So there is no bound on concurrency and no new deadlock, and
// messages are handled as unordered as before.
//
// Idle workers are a LIFO (the one that finished last has the warmest
// stack), at most maxIdle of them; one idle for idleFor ends. Close ends the
// idle ones; after it every message gets its own goroutine again.
type msgWorkers struct {
	handle  func(Message)
	maxIdle int
	idleFor time.Duration

	mu      sync.Mutex
	idle    []*msgWorker // LIFO; idleSince rises from the bottom
	closed  bool
	retirer bool          // a retire loop runs (only while workers are idle)
	stop    chan struct{} // closed by close: ends the retire loop
	started uint64        // worker goroutines started (tests)
}

type msgWorker struct {
	jobs      chan Message // capacity 1: run never waits for the worker
	idleSince time.Time
}

const (
	msgWorkersMaxIdle = 256
	msgWorkersIdleFor = 10 * time.Second
)

func newMsgWorkers(handle func(Message), maxIdle int, idleFor time.Duration) *msgWorkers {
	return &msgWorkers{handle: handle, maxIdle: maxIdle, idleFor: idleFor, stop: make(chan struct{})}
}

// run hands msg to the worker that went idle last, or to a new one.
func (w *msgWorkers) run(msg Message) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		go w.handle(msg)
		return
	}
	if n := len(w.idle); n > 0 {
		h := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		h.jobs <- msg
		return
	}
	w.started++
	w.mu.Unlock()
	go w.serve(&msgWorker{jobs: make(chan Message, 1)}, msg)
}

func (w *msgWorkers) serve(h *msgWorker, msg Message) {
	for ok := true; ok; msg, ok = <-h.jobs {
		w.handle(msg)
		msg = nil // holds nothing of the message while idle
		if !w.park(h) {
			return
		}
	}
}

// park puts h on top of the idle stack; false when h should end instead.
func (w *msgWorkers) park(h *msgWorker) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(w.idle) >= w.maxIdle {
		return false
	}
	h.idleSince = time.Now()
	w.idle = append(w.idle, h)
	if !w.retirer {
		w.retirer = true
		go w.retireLoop()
	}
	return true
}

// retireLoop ends workers idle for longer than idleFor, checking every
// idleFor/2, for as long as any worker is idle.
func (w *msgWorkers) retireLoop() {
	t := time.NewTicker(w.idleFor / 2)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		if !w.retire(time.Now().Add(-w.idleFor)) {
			return
		}
	}
}

// retire ends the workers idle since before cutoff; false (and the retire
// loop is marked stopped) when none is left idle.
func (w *msgWorkers) retire(cutoff time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for n < len(w.idle) && w.idle[n].idleSince.Before(cutoff) {
		close(w.idle[n].jobs)
		n++
	}
	rest := copy(w.idle, w.idle[n:])
	clear(w.idle[rest:])
	w.idle = w.idle[:rest]
	if len(w.idle) == 0 {
		w.retirer = false
		return false
	}
	return true
}

// close ends the idle workers and the retire loop; busy workers end when
// their message is handled.
func (w *msgWorkers) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	for _, h := range w.idle {
		close(h.jobs)
	}
	w.idle = nil
	close(w.stop)
}

// counts is the workers idle and started so far.
func (w *msgWorkers) counts() (idle int, started uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle), w.started
}
