package admission

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Between beats a window writes a conference only where its share here
// crosses zero; a count that stays positive waits for the beat.
func TestLedger_ConferenceInProgressWaitsForTheBeat(t *testing.T) {
	ctx := context.Background()
	type step struct {
		what        string
		add, remove []string // dialog keys of conference c on node n1, at A
		addB, remB  []string // the same at B
		beatA       bool     // A beats after its flush
		dialogs     string   // c's dialogs in Redis after the step ("" = no key)
		writes      float64  // A's writes so far
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"first dialog places at once, more wait for the beat", []step{
			{what: "first", add: []string{"a1"}, dialogs: "1", writes: 1},
			{what: "second", add: []string{"a2"}, dialogs: "1", writes: 2},
			{what: "third, then a beat", add: []string{"a3"}, beatA: true, dialogs: "3", writes: 4},
			{what: "one ends", remove: []string{"a1"}, dialogs: "3", writes: 5},
			{what: "the rest end", remove: []string{"a2", "a3"}, dialogs: "", writes: 6},
		}},
		{"a stale positive share keeps the key while another instance's last dialog goes", []step{
			{what: "B holds one", addB: []string{"b1"}, dialogs: "1", writes: 0},
			{what: "A joins", add: []string{"a1"}, dialogs: "2", writes: 1},
			{what: "A adds, deferred", add: []string{"a2"}, dialogs: "2", writes: 2},
			{what: "B's goes", remB: []string{"b1"}, dialogs: "1", writes: 2},
			{what: "A's beat", beatA: true, dialogs: "2", writes: 3},
		}},
		{"a dialog replaced within a window leaves the count in Redis as it was", []step{
			{what: "first", add: []string{"a1"}, dialogs: "1", writes: 1},
			{what: "ends and another starts", remove: []string{"a1"}, add: []string{"a2"}, dialogs: "1", writes: 2},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLedgerEnv(t)
			ha, hb := newHolder(), newHolder()
			a, b := e.ledger("A", ha), e.ledger("B", hb)
			for _, s := range tc.steps {
				change(ctx, a, ha, s.add, s.remove)
				change(ctx, b, hb, s.addB, s.remB)
				if s.beatA {
					a.Beat(ctx)
				}
				got := e.mr.HGet(e.k.Conf("c"), "dialogs")
				if !e.mr.Exists(e.k.Conf("c")) {
					got = ""
				}
				if got != s.dialogs {
					t.Fatalf("%s: dialogs %q, want %q", s.what, got, s.dialogs)
				}
				if w := testutil.ToFloat64(a.m.writes); w != s.writes {
					t.Fatalf("%s: A's writes %v, want %v", s.what, w, s.writes)
				}
			}
		})
	}
}

// change adds and removes dialogs of conference c on node n1 in h, then
// flushes l's window, if anything changed.
func change(ctx context.Context, l *Ledger, h *fakeHolder, add, remove []string) {
	for _, k := range add {
		h.add(k, "c", "n1")
	}
	for _, k := range remove {
		h.remove(k)
	}
	if len(add)+len(remove) > 0 {
		l.Touch("c", "n1")
		l.flush(ctx)
	}
}

// A failover drops the local answer: the next window writes the
// conference though it stays in progress, so the answer comes back then.
func TestLedger_ForgetPlacedWritesTheNextWindow(t *testing.T) {
	ctx := context.Background()
	e := newLedgerEnv(t)
	h := newHolder()
	l := e.ledger("A", h)
	h.add("a1", "c", "n1")
	l.Touch("c", "n1")
	l.flush(ctx)
	if n, ok := l.Placed("c"); !ok || n != "n1" {
		t.Fatalf("after the first write: Placed %q %v", n, ok)
	}
	l.ForgetPlaced("c")
	e.mr.HSet(e.k.Conf("c"), "node", "n2") // what the failover's Move wrote
	h.add("a2", "c", "n2")
	l.Touch("c", "n2")
	l.flush(ctx)
	if n, ok := l.Placed("c"); !ok || n != "n2" {
		t.Fatalf("after the next window: Placed %q %v, want n2", n, ok)
	}
	if got := e.mr.HGet(e.k.Conf("c"), "dialogs"); got != "2" {
		t.Fatalf("dialogs %q, want 2 (written with the answer)", got)
	}
}
