package admission

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// clockLedger is a Ledger on e's Redis with the clock *now and no
// reconcile (its repairs would hide the beats').
func (e *ledgerEnv) clockLedger(self string, h Holder, now *time.Time) *Ledger {
	l, err := NewLedger(e.rdb, e.k, LedgerOptions{Self: self, Interval: time.Second, LiveFor: 5 * time.Second,
		HeartbeatTimeout: 5 * time.Second, ConfTTL: time.Hour, RedisTimeout: time.Second, ReconcileEvery: time.Hour,
		Now: func() time.Time { return *now }}, h, zerolog.Nop(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	l.lastRecon = *now // the first reconcile would come after 3 beats
	return l
}

func allFullWrites(l *Ledger) map[string]float64 {
	out := map[string]float64{}
	for _, r := range fullReasons {
		if v := fullWrites(l, r); v > 0 {
			out[r] = v
		}
	}
	return out
}

// Between full writes a beat writes only what changed: a count edited by
// hand stays wrong until the next full write, FullEvery later.
func TestLedger_LightBeatsWriteOnlyWhatChanged(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	h := newHolder()
	a := e.clockLedger("A", h, &now)
	if a.opts.FullEvery != 10*time.Second {
		t.Fatalf("default FullEvery = %s, want 10 beats", a.opts.FullEvery)
	}
	h.add("d1", "c1", "n1")
	h.add("d2", "c1", "n1")
	h.add("d3", "c2", "n2")
	a.Beat(ctx)
	e.want("first beat", map[string]string{"n1": "2", "n2": "1"}, map[string]string{"A": "3"},
		map[string]string{"c1": "2", "c2": "1"})

	e.mr.HSet(e.k.Conf("c2"), "dialogs", "9")
	e.mr.HSet(e.k.NodeCalls(), "n9", "5")
	beat := func() {
		now = now.Add(time.Second)
		e.mr.FastForward(time.Second)
		a.Beat(ctx)
	}
	for range 3 {
		beat()
	}
	e.want("light beats", map[string]string{"n1": "2", "n2": "1", "n9": "5"}, map[string]string{"A": "3"},
		map[string]string{"c1": "2", "c2": "9"})

	// A dialog more of c1: the window leaves it for the beat, which
	// writes it (light).
	h.add("d4", "c1", "n1")
	a.Touch("c1", "n1")
	a.flush(ctx)
	e.want("deferred", map[string]string{"n1": "3", "n2": "1", "n9": "5"}, map[string]string{"A": "4"},
		map[string]string{"c1": "2"})
	beat()
	e.want("the beat after", map[string]string{"n1": "3", "n2": "1", "n9": "5"}, map[string]string{"A": "4"},
		map[string]string{"c1": "3", "c2": "9"})
	if got := allFullWrites(a); len(got) != 1 || got[FullStart] != 1 {
		t.Fatalf("full writes %v, want only the first beat's", got)
	}

	for range 6 { // 10 beats after the first
		beat()
	}
	e.want("the periodic full write", map[string]string{"n1": "3", "n2": "1"}, map[string]string{"A": "4"},
		map[string]string{"c1": "3", "c2": "1"})
	if got := fullWrites(a, FullPeriodic); got != 1 {
		t.Errorf("periodic full writes %v, want 1", got)
	}

	// A new subscription to the placements channel (Redis reconnected):
	// the next beat is full.
	a.PlacementsSubscribed()
	beat()
	if got := fullWrites(a, FullResubscribed); got != 1 {
		t.Errorf("full writes after a resubscription %v, want 1", got)
	}
}

// An instance that restarted (same name, new process) rewrote its share
// without the dialogs it lost: the other instances' next beat recounts what
// they carry at once, not at their next periodic full write.
func TestLedger_RestartedInstanceRecountedAtTheNextBeat(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	ha, hb := newHolder(), newHolder()
	a, b := e.clockLedger("A", ha, &now), e.clockLedger("B", hb, &now)
	ha.add("a1", "X", "n1")
	hb.add("b1", "X", "n1")
	hb.add("b2", "Y", "n1")
	a.Beat(ctx)
	b.Beat(ctx)
	now = now.Add(time.Second)
	a.Beat(ctx) // light: B's share appeared after A's first write
	e.want("both hold X", map[string]string{"n1": "3"}, map[string]string{"A": "1", "B": "2"},
		map[string]string{"X": "2", "Y": "1"})

	// B restarts holding nothing: its first beat deletes and rewrites its
	// share, and carries no conference it does not know of.
	b2 := e.clockLedger("B", newHolder(), &now)
	b2.Beat(ctx)
	e.want("B restarted", map[string]string{"n1": "1"}, map[string]string{"A": "1"}, map[string]string{"X": "2"})
	before := fullWrites(a, FullInstancesChanged)
	now = now.Add(time.Second)
	a.Beat(ctx)
	e.want("A's next beat", map[string]string{"n1": "1"}, map[string]string{"A": "1"}, map[string]string{"X": "1"})
	if got := fullWrites(a, FullInstancesChanged); got != before+1 {
		t.Errorf("A's full writes for changed instances %v, want %v", got, before+1)
	}
	// Y, which A never held, is the reconcile's (ReconcileEvery).
}

// emptyHolder holds nothing, and says so with nil maps, as the proxy's
// dialog set does.
type emptyHolder struct{}

func (emptyHolder) ConfHolding(string) ConfHolding { return ConfHolding{} }
func (emptyHolder) NodeDialogs(string) int         { return 0 }
func (emptyHolder) ActiveDialogs() int             { return 0 }
func (emptyHolder) Holdings() Holdings             { return Holdings{} }
func (emptyHolder) EndNoted([]string) int          { return 0 }

// A beat with changes to write and holdings without maps (the last dialog
// of a node just ended) writes the zeros. It once panicked on the nil map,
// killing the instance.
func TestLedger_BeatWithNilHoldingsWritesTheChanges(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	a := e.clockLedger("A", emptyHolder{}, &now)
	a.Beat(ctx) // full
	e.mr.HSet(e.k.NodeCalls(), "n1", "1")
	e.mr.HSet(e.k.Conf("c"), "node", "n1", "dialogs", "1")
	a.Touch("c", "n1")
	now = now.Add(time.Second)
	a.Beat(ctx) // light, carrying the changes
	e.want("light beat", map[string]string{}, map[string]string{}, nil, "c")
	if got := allFullWrites(a); len(got) != 1 {
		t.Errorf("full writes %v, want only the first", got)
	}
}

// One instance reconciles the conference keys for all: the one holding the
// lease renews it; another takes over once it lapses.
func TestLedger_OneInstanceReconcilesForAll(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := context.Background()
	a, b := e.ledger("A", newHolder()), e.ledger("B", newHolder())
	for range reconcileAfter {
		a.Beat(ctx)
		b.Beat(ctx)
	}
	stale := func() { e.mr.HSet(e.k.Conf("old"), "node", "n1", "dialogs", "5") }
	stale()
	a.Beat(ctx) // A's first reconcile: A takes the lease
	e.want("A reconciled", map[string]string{}, map[string]string{}, nil, "old")
	if got, _ := e.mr.Get(e.k.Reconciler()); got != "A" {
		t.Fatalf("reconciler %q, want A", got)
	}

	stale()
	b.Beat(ctx)
	if !e.mr.Exists(e.k.Conf("old")) {
		t.Fatal("B reconciled while A holds the lease")
	}
	a.Beat(ctx)
	e.want("A again", map[string]string{}, map[string]string{}, nil, "old")

	// A stops: its lease lapses, and B's next reconcile takes it.
	stale()
	e.mr.FastForward(10 * time.Millisecond)
	b.Beat(ctx)
	e.want("B took over", map[string]string{}, map[string]string{}, nil, "old")
	if got, _ := e.mr.Get(e.k.Reconciler()); got != "B" {
		t.Fatalf("reconciler %q after A's lease lapsed, want B", got)
	}
}
