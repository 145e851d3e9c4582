package admission

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
)

// TestPlacementIndex_TrustedOnlyWhenComplete: the index answers "no
// placement" only after a scan that began after the latest subscription,
// with no Redis failure since the scan began.
func TestPlacementIndex_TrustedOnlyWhenComplete(t *testing.T) {
	type step func(x *placementIndex)
	var (
		sub  step = func(x *placementIndex) { x.resubscribed() }
		lost step = func(x *placementIndex) { x.lost() }
		scan      = func(confs ...string) step {
			return func(x *placementIndex) { x.scanStarted(); x.scanDone(confs, true) }
		}
		failedScan step = func(x *placementIndex) { x.scanStarted(); x.scanDone(nil, false) }
		announce        = func(c string) step { return func(x *placementIndex) { x.announced(c, true) } }
		gone            = func(c string) step { return func(x *placementIndex) { x.announced(c, false) } }
		// a scan during which something happens
		scanAround = func(mid step, confs ...string) step {
			return func(x *placementIndex) { x.scanStarted(); mid(x); x.scanDone(confs, true) }
		}
	)
	for _, tc := range []struct {
		name     string
		steps    []step
		ready    bool
		unplaced map[string]bool // conf -> want unplaced
	}{
		{name: "nothing yet", ready: false, unplaced: map[string]bool{"x": false}},
		{name: "subscribed, no scan", steps: []step{sub}, unplaced: map[string]bool{"x": false}},
		{name: "scan before any subscription", steps: []step{scan("a"), sub}, unplaced: map[string]bool{"x": false}},
		{name: "subscribed then scanned", steps: []step{sub, scan("a")}, ready: true,
			unplaced: map[string]bool{"x": true, "a": false}},
		{name: "announced after the scan", steps: []step{sub, scan(), announce("b")}, ready: true,
			unplaced: map[string]bool{"b": false, "x": true}},
		{name: "announced during the scan, which missed it", steps: []step{sub, scanAround(announce("b"))}, ready: true,
			unplaced: map[string]bool{"b": false, "x": true}},
		{name: "announced before the scan, key gone by the scan (pruned)", steps: []step{sub, announce("b"), scan()}, ready: true,
			unplaced: map[string]bool{"b": true}},
		{name: "gone after the scan", steps: []step{sub, scan("a"), gone("a")}, ready: true,
			unplaced: map[string]bool{"a": true}},
		{name: "gone then placed again", steps: []step{sub, scan("a"), gone("a"), announce("a")}, ready: true,
			unplaced: map[string]bool{"a": false}},
		{name: "gone during the scan, which still saw it", steps: []step{sub, scanAround(gone("a"), "a")}, ready: true,
			unplaced: map[string]bool{"a": true}},
		{name: "gone during an incomplete scan", steps: []step{sub, scan("a"), scanAround(func(x *placementIndex) { x.resubscribed(); x.announced("a", false) }, "a")},
			unplaced: map[string]bool{"a": false}},
		{name: "Redis failure after the scan", steps: []step{sub, scan(), lost}, unplaced: map[string]bool{"x": false}},
		{name: "Redis failure during the scan", steps: []step{sub, scanAround(lost, "a")}, unplaced: map[string]bool{"x": false}},
		{name: "failure, then a scan", steps: []step{sub, scan(), lost, scan("a")}, ready: true,
			unplaced: map[string]bool{"x": true, "a": false}},
		{name: "resubscribed after the scan", steps: []step{sub, scan(), sub}, unplaced: map[string]bool{"x": false}},
		{name: "resubscribed during the scan keeps what was known", steps: []step{sub, scan("a"), scanAround(sub), scan("c")},
			ready: true, unplaced: map[string]bool{"a": true, "c": false, "x": true}},
		{name: "resubscribed during the scan: not complete", steps: []step{sub, scan("a"), scanAround(sub)},
			unplaced: map[string]bool{"a": false, "x": false}},
		{name: "a failed scan changes nothing", steps: []step{sub, scan("a"), failedScan}, ready: true,
			unplaced: map[string]bool{"a": false, "x": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var x placementIndex
			for _, s := range tc.steps {
				s(&x)
			}
			if got := x.ready(); got != tc.ready {
				t.Errorf("ready = %v, want %v", got, tc.ready)
			}
			if got, want := x.stale(), x.subscribed && !tc.ready; got != want {
				t.Errorf("stale = %v, want %v", got, want)
			}
			for c, want := range tc.unplaced {
				if got := x.unplaced(c); got != want {
					t.Errorf("unplaced(%q) = %v, want %v", c, got, want)
				}
			}
		})
	}
}

// TestLedger_AnnouncesEachNewPlacementOnce: the write that gives a
// conference its node publishes the id on the placements channel; later
// writes of the same conference do not.
func TestLedger_AnnouncesEachNewPlacementOnce(t *testing.T) {
	e := newLedgerEnv(t)
	ps := e.rdb.Subscribe(context.Background(), e.k.Placements())
	defer ps.Close()
	if _, err := ps.Receive(context.Background()); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	ch := ps.Channel()
	h := newHolder()
	l := e.ledger("A", h)
	ctx := context.Background()

	h.add("d1", "c1", "n1")
	l.Touch("c1", "n1")
	l.flush(ctx)
	expect := func(want, what string) {
		t.Helper()
		select {
		case m := <-ch:
			if m.Payload != want {
				t.Errorf("%s: announced %q, want %q", what, m.Payload, want)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: nothing announced", what)
		}
	}
	expect(keys.PlacedMessage("c1"), "new placement")
	h.add("d2", "c1", "n1") // a second dialog of the same conference
	l.Touch("c1", "n1")
	l.flush(ctx)
	l.Beat(ctx)
	select {
	case m := <-ch:
		t.Errorf("announced %q again: only the write that creates the node field announces", m.Payload)
	case <-time.After(200 * time.Millisecond):
	}
	if got := e.mr.HGet(e.k.Conf("c1"), "node"); got != "n1" {
		t.Errorf("conf c1 node = %q, want n1", got)
	}
	h.remove("d1")
	h.remove("d2")
	l.Touch("c1", "")
	l.flush(ctx)
	expect(keys.GoneMessage("c1"), "last dialog ended")
	if e.mr.Exists(e.k.Conf("c1")) {
		t.Error("conf c1 key kept after its last dialog")
	}
}

// TestLedger_IndexRebuiltAtOnceAfterASubscription: Run scans as soon as
// the placements channel is subscribed, and a beat scans again after a
// failure, without waiting for the reconcile.
func TestLedger_IndexRebuiltAtOnceAfterASubscription(t *testing.T) {
	e := newLedgerEnv(t)
	l, err := NewLedger(e.rdb, e.k, LedgerOptions{Self: "A", Interval: time.Hour, ReconcileEvery: time.Hour},
		newHolder(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	time.Sleep(50 * time.Millisecond) // Run's first beat is over: only the subscription can start a scan
	l.PlacementsSubscribed()
	deadline := time.Now().Add(3 * time.Second)
	for !l.index.ready() {
		if time.Now().After(deadline) {
			t.Fatal("index not rebuilt after the subscription (beats and reconcile are an hour apart)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !l.Unplaced("new-conf") {
		t.Error("a conference nobody placed is not answered unplaced")
	}

	b, err := NewLedger(e.rdb, e.k, LedgerOptions{Self: "B", Interval: time.Second, ReconcileEvery: time.Hour},
		newHolder(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b.PlacementsSubscribed()
	b.fail(context.Background(), "beat", errors.New("i/o timeout"))
	b.Beat(context.Background())
	if !b.index.ready() {
		t.Error("a beat after a failure did not rebuild the index")
	}
}
