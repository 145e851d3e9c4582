package sip

import (
	"runtime"
	"testing"
	"time"
)

// sipedge patch tests (transaction_workers.go).

func testRequest(callID string) *Request {
	r := NewRequest(OPTIONS, Uri{User: "a", Host: "127.0.0.1"})
	id := CallIDHeader(callID)
	r.AppendHeader(&id)
	return r
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Messages handled one after another run on one worker: nothing new is
// started once a worker is idle.
func TestMsgWorkers_SequentialMessagesReuseOneWorker(t *testing.T) {
	done := make(chan string, 1)
	w := newMsgWorkers(func(m Message) { done <- m.(*Request).CallID().Value() }, 8, time.Minute)
	defer w.close()
	for i, id := range []string{"a", "b", "c", "d"} {
		w.run(testRequest(id))
		if got := <-done; got != id {
			t.Fatalf("message %d: handled %q, want %q", i, got, id)
		}
		waitUntil(t, "the worker back idle", func() bool { idle, _ := w.counts(); return idle == 1 })
	}
	if _, started := w.counts(); started != 1 {
		t.Fatalf("started %d workers for 4 sequential messages, want 1", started)
	}
}

// A handler that blocks does not hold the next message back: that gets a
// worker of its own, as it would have got a goroutine upstream (a client
// transaction blocked passing a response up must not stall the layer).
func TestMsgWorkers_BlockedHandlerDoesNotHoldOthers(t *testing.T) {
	release := make(chan struct{})
	handled := make(chan string, 4)
	w := newMsgWorkers(func(m Message) {
		id := m.(*Request).CallID().Value()
		if id == "blocks" {
			<-release
		}
		handled <- id
	}, 8, time.Minute)
	defer w.close()
	w.run(testRequest("blocks"))
	w.run(testRequest("next"))
	select {
	case got := <-handled:
		if got != "next" {
			t.Fatalf("handled %q first, want next", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second message waited for the blocked handler")
	}
	close(release)
	if got := <-handled; got != "blocks" {
		t.Fatalf("handled %q, want blocks", got)
	}
	if _, started := w.counts(); started != 2 {
		t.Fatalf("started %d workers, want 2", started)
	}
}

// The worker that finished last takes the next message (its stack is the
// warmest).
func TestMsgWorkers_LastIdleTakesTheNextMessage(t *testing.T) {
	gates := map[string]chan struct{}{"w1": make(chan struct{}), "w2": make(chan struct{})}
	ran := make(chan string, 4)
	w := newMsgWorkers(func(m Message) {
		id := m.(*Request).CallID().Value()
		if g := gates[id]; g != nil {
			<-g
		}
		ran <- id
	}, 8, time.Minute)
	defer w.close()
	w.run(testRequest("w1"))
	w.run(testRequest("w2"))
	for i, id := range []string{"w1", "w2"} { // w1 goes idle first, then w2
		close(gates[id])
		if got := <-ran; got != id {
			t.Fatalf("ran %q, want %q", got, id)
		}
		waitUntil(t, id+" idle", func() bool { idle, _ := w.counts(); return idle == i+1 })
	}
	w.mu.Lock()
	last := w.idle[1]
	w.mu.Unlock()
	w.run(testRequest("next"))
	if got := <-ran; got != "next" {
		t.Fatalf("ran %q, want next", got)
	}
	waitUntil(t, "the worker back idle", func() bool { idle, _ := w.counts(); return idle == 2 })
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.idle[1] != last {
		t.Fatal("the message went to a worker other than the one that went idle last")
	}
	if w.started != 2 {
		t.Fatalf("started %d workers, want 2", w.started)
	}
}

// At most maxIdle workers wait; the others end when their message is done.
func TestMsgWorkers_AtMostMaxIdleWait(t *testing.T) {
	block := make(chan struct{})
	done := make(chan struct{}, 3)
	w := newMsgWorkers(func(Message) { <-block; done <- struct{}{} }, 1, time.Minute)
	defer w.close()
	for _, id := range []string{"a", "b", "c"} {
		w.run(testRequest(id))
	}
	close(block)
	for range 3 {
		<-done
	}
	waitUntil(t, "a worker parked", func() bool { idle, _ := w.counts(); return idle >= 1 })
	time.Sleep(20 * time.Millisecond) // the other two have parked or ended by now
	if idle, started := w.counts(); idle != 1 || started != 3 {
		t.Fatalf("%d idle of %d started, want 1 of 3", idle, started)
	}
}

// Idle workers end after idleFor, and their goroutines are gone.
func TestMsgWorkers_IdleWorkersRetire(t *testing.T) {
	before := runtime.NumGoroutine()
	done := make(chan struct{}, 4)
	block := make(chan struct{})
	w := newMsgWorkers(func(Message) { <-block; done <- struct{}{} }, 8, 40*time.Millisecond)
	defer w.close()
	for _, id := range []string{"a", "b", "c"} {
		w.run(testRequest(id))
	}
	close(block)
	for range 3 {
		<-done
	}
	waitUntil(t, "three idle workers", func() bool { idle, _ := w.counts(); return idle == 3 })
	waitUntil(t, "idle workers retired", func() bool { idle, _ := w.counts(); return idle == 0 })
	waitUntil(t, "their goroutines and the retire loop gone", func() bool { return runtime.NumGoroutine() <= before })
	// A later message still gets handled (by a new worker).
	w.run(testRequest("later"))
	<-done
	if _, started := w.counts(); started != 4 {
		t.Fatalf("started %d workers, want 4", started)
	}
}

// close ends the idle workers; messages after it are still handled, each
// on a goroutine of its own.
func TestMsgWorkers_CloseEndsIdleWorkers(t *testing.T) {
	before := runtime.NumGoroutine()
	done := make(chan struct{}, 2)
	w := newMsgWorkers(func(Message) { done <- struct{}{} }, 8, time.Minute)
	w.run(testRequest("a"))
	<-done
	waitUntil(t, "an idle worker", func() bool { idle, _ := w.counts(); return idle == 1 })
	w.close()
	waitUntil(t, "the idle worker and the retire loop gone", func() bool { return runtime.NumGoroutine() <= before })
	w.run(testRequest("after close"))
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a message after close was not handled")
	}
	if idle, started := w.counts(); idle != 0 || started != 1 {
		t.Fatalf("after close: %d idle, %d started; want 0 and 1", idle, started)
	}
	w.close() // twice is harmless
}
