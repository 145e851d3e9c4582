package admission

import (
	"context"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
)

// fakeHolder is a dialog set: dialog key -> (conference, node).
type fakeHolder struct {
	mu sync.Mutex
	d  map[string][2]string
}

func newHolder() *fakeHolder { return &fakeHolder{d: map[string][2]string{}} }

func (h *fakeHolder) add(key, conf, node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.d[key] = [2]string{conf, node}
}

func (h *fakeHolder) remove(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.d[key]
	delete(h.d, key)
	return ok
}

func (h *fakeHolder) ConfHolding(conf string) ConfHolding { return h.Holdings().Confs[conf] }
func (h *fakeHolder) NodeDialogs(node string) int         { return h.Holdings().Nodes[node] }
func (h *fakeHolder) ActiveDialogs() int                  { return h.Holdings().Total }

func (h *fakeHolder) Holdings() Holdings {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := Holdings{Confs: map[string]ConfHolding{}, Nodes: map[string]int{}, Total: len(h.d)}
	for _, cn := range h.d {
		c := out.Confs[cn[0]]
		c.Dialogs++
		c.Node = cn[1]
		out.Confs[cn[0]] = c
		out.Nodes[cn[1]]++
	}
	return out
}

func (h *fakeHolder) EndNoted(keys []string) int {
	n := 0
	for _, k := range keys {
		if h.remove(k) {
			n++
		}
	}
	return n
}

type ledgerEnv struct {
	t   *testing.T
	mr  *miniredis.Miniredis
	rdb *redis.Client
	k   keys.Keys
}

func newLedgerEnv(t *testing.T) *ledgerEnv {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return &ledgerEnv{t: t, mr: mr, rdb: rdb, k: keys.New("")}
}

func (e *ledgerEnv) ledger(self string, h Holder) *Ledger {
	l, err := NewLedger(e.rdb, e.k, LedgerOptions{Self: self, Interval: time.Second, LiveFor: 5 * time.Second,
		HeartbeatTimeout: 5 * time.Second, ConfTTL: time.Hour, RedisTimeout: time.Second, ReconcileEvery: time.Nanosecond,
		Now: time.Now}, h, zerolog.Nop(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

func (e *ledgerEnv) hash(key string) map[string]string {
	out := map[string]string{}
	if !e.mr.Exists(key) {
		return out
	}
	fields, _ := e.mr.HKeys(key)
	for _, f := range fields {
		out[f] = e.mr.HGet(key, f)
	}
	return out
}

// snapshot is every hash and set in Redis (what an AOF would restore).
func (e *ledgerEnv) snapshot() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, k := range e.mr.Keys() {
		switch e.mr.Type(k) {
		case "hash":
			out[k] = e.hash(k)
		case "set":
			ms, _ := e.mr.Members(k)
			set := map[string]string{}
			for _, m := range ms {
				set[m] = ""
			}
			out["set:"+k] = set
		}
	}
	return out
}

// restore replaces everything in Redis with snap.
func (e *ledgerEnv) restore(snap map[string]map[string]string) {
	e.mr.FlushAll()
	for k, fields := range snap {
		for f, v := range fields {
			if set, ok := strings.CutPrefix(k, "set:"); ok {
				e.mr.SAdd(set, f)
			} else {
				e.mr.HSet(k, f, v)
			}
		}
	}
}

func fullWrites(l *Ledger, reason string) float64 {
	return testutil.ToFloat64(l.m.fullWrites.WithLabelValues(reason))
}

// want checks node_calls, instance_calls and the dialogs of each conf key
// (a conf absent from confs must have no key).
func (e *ledgerEnv) want(what string, nodes, insts, confs map[string]string, gone ...string) {
	e.t.Helper()
	if got := e.hash(e.k.NodeCalls()); !maps.Equal(got, nodes) {
		e.t.Errorf("%s: node_calls = %v, want %v", what, got, nodes)
	}
	if got := e.hash(e.k.InstanceCalls()); !maps.Equal(got, insts) {
		e.t.Errorf("%s: instance_calls = %v, want %v", what, got, insts)
	}
	for c, n := range confs {
		if got := e.mr.HGet(e.k.Conf(c), "dialogs"); got != n {
			e.t.Errorf("%s: conf %s dialogs = %q, want %q", what, c, got, n)
		}
	}
	for _, c := range gone {
		if e.mr.Exists(e.k.Conf(c)) {
			e.t.Errorf("%s: conf %s key kept: %v", what, c, e.hash(e.k.Conf(c)))
		}
	}
}

func TestLedger_CountsAreSumsOfTheLiveInstancesShares(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := context.Background()
	ha, hb := newHolder(), newHolder()
	a, b := e.ledger("A", ha), e.ledger("B", hb)

	ha.add("d1", "c1", "n1")
	a.Touch("c1", "n1")
	a.flush(ctx)
	if got := e.mr.HGet(e.k.Conf("c1"), "node"); got != "n1" {
		t.Fatalf("first dialog did not place c1 on n1: node %q", got)
	}
	ha.add("d2", "c1", "n1")
	hb.add("d3", "c1", "n2") // a racing instance picked another node: the placement stays n1
	hb.add("d4", "c2", "n2")
	a.Touch("c1", "n1")
	b.Touch("c1", "n2")
	b.Touch("c2", "n2")
	a.flush(ctx)
	b.flush(ctx)
	want := func(what string) {
		t.Helper()
		e.want(what, map[string]string{"n1": "2", "n2": "2"}, map[string]string{"A": "2", "B": "2"},
			map[string]string{"c1": "3", "c2": "1"})
		if got := e.mr.HGet(e.k.Conf("c1"), "node"); got != "n1" {
			t.Errorf("%s: c1 placed on %q, want n1", what, got)
		}
	}
	// A's second dialog kept c1 in progress here: its count waits for
	// A's beat (the placement and the other counts do not).
	e.want("after the flushes", map[string]string{"n1": "2", "n2": "2"}, map[string]string{"A": "2", "B": "2"},
		map[string]string{"c1": "2", "c2": "1"})
	a.Beat(ctx)
	want("after the starts")

	// Writing absolute values again, in any order, changes nothing.
	for range 3 {
		a.Touch("c1", "n1")
		a.flush(ctx)
		b.Beat(ctx)
		a.Beat(ctx)
	}
	want("after repeated writes")

	// Redis restarted empty: the next beats restore every count exactly.
	e.mr.FlushAll()
	a.Beat(ctx)
	b.Beat(ctx)
	want("after an empty Redis")

	// Redis restored from an old AOF: every key as it was some writes ago
	// (the shares included), with stale counts and a conference that
	// ended meanwhile.
	old := e.snapshot()
	for range 2 {
		a.Touch("c1", "n1")
		a.flush(ctx)
		b.Touch("c2", "n2")
		b.flush(ctx)
	}
	e.restore(old)
	e.mr.HSet(e.k.NodeCalls(), "n1", "7", "n3", "4")
	e.mr.HSet(e.k.InstanceCalls(), "A", "9", "GONE", "3")
	e.mr.HSet(e.k.Conf("c1"), "dialogs", "8")
	e.mr.HSet(e.k.Conf("old"), "node", "n1", "dialogs", "5")
	lostA, lostB := fullWrites(a, FullShareLost), fullWrites(b, FullShareLost)
	a.Beat(ctx)
	b.Beat(ctx)
	want("after a stale Redis")
	if fullWrites(a, FullShareLost) != lostA+1 || fullWrites(b, FullShareLost) != lostB+1 {
		t.Errorf("full writes for a lost share: A %v→%v, B %v→%v; want one more each",
			lostA, fullWrites(a, FullShareLost), lostB, fullWrites(b, FullShareLost))
	}
	e.want("stale conference", map[string]string{"n1": "2", "n2": "2"}, map[string]string{"A": "2", "B": "2"}, nil, "old")

	// Ends: c1 keeps B's dialog, then goes with it.
	ha.remove("d1")
	ha.remove("d2")
	a.Touch("c1", "n1")
	a.flush(ctx)
	e.want("A's dialogs ended", map[string]string{"n2": "2"}, map[string]string{"B": "2"}, map[string]string{"c1": "1"})
	hb.remove("d3")
	b.Touch("c1", "n2")
	b.flush(ctx)
	e.want("B's c1 dialog ended", map[string]string{"n2": "1"}, map[string]string{"B": "1"},
		map[string]string{"c2": "1"}, "c1")

	// An instance that stops writing stops counting once its share expires.
	e.mr.FastForward(6 * time.Second)
	a.Beat(ctx)
	e.want("B's share expired", map[string]string{}, map[string]string{}, nil)
}

func TestLedger_EndNotedByAnotherInstance(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := context.Background()
	ha, hb := newHolder(), newHolder()
	a, b := e.ledger("A", ha), e.ledger("B", hb)
	ha.add("call1\x1fx\x1fy", "c1", "n1")
	a.Beat(ctx)
	b.Beat(ctx)
	e.want("started", map[string]string{"n1": "1"}, map[string]string{"A": "1"}, map[string]string{"c1": "1"})

	// B relayed the BYE (three times: a replay) and a forged one.
	for range 3 {
		b.NoteEnded("A", "call1\x1fx\x1fy")
	}
	b.NoteEnded("A", "forged\x1fx\x1fz")
	b.flush(ctx)
	a.Beat(ctx)
	e.want("noted end", map[string]string{}, map[string]string{}, nil, "c1")
	if e.mr.Exists(e.k.Ended("A")) {
		t.Errorf("notes kept after the owner read them")
	}
}

func TestLedger_FailedWritesAreRetried(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := context.Background()
	ha := newHolder()
	a := e.ledger("A", ha)
	ha.add("d1", "c1", "n1")
	a.Touch("c1", "n1")
	a.flush(ctx)
	ha.remove("d1")
	a.Touch("c1", "n1")
	e.mr.SetError("LOADING")
	a.flush(ctx) // fails: kept dirty
	a.NoteEnded("B", "k")
	a.flush(ctx)
	e.mr.SetError("")
	a.Beat(ctx)
	e.want("after the retry", map[string]string{}, map[string]string{}, nil, "c1")
	if ok, _ := e.mr.SIsMember(e.k.Ended("B"), "k"); !ok {
		t.Errorf("note written while Redis failed was lost")
	}
}

func TestLedger_ReconcileWaitsForInstancesRewritingTheirShare(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := context.Background()
	a := e.ledger("A", newHolder())
	e.mr.HSet(e.k.Conf("early"), "node", "n1", "dialogs", "1")
	a.Beat(ctx)
	a.Beat(ctx)
	if !e.mr.Exists(e.k.Conf("early")) {
		t.Fatal("reconciled before Redis answered for a few beats in a row")
	}
	a.Beat(ctx)
	a.Beat(ctx)
	if e.mr.Exists(e.k.Conf("early")) {
		t.Fatal("conference no instance holds kept after a few beats")
	}
	// B is alive (fresh heartbeat) but has not rewritten its share yet.
	e.mr.SAdd(e.k.Instances(), "B")
	e.mr.HSet(e.k.Instance("B"), "heartbeat", "0")
	e.mr.HSet(e.k.Conf("cb"), "node", "n1", "dialogs", "2")
	e.mr.HSet(e.k.Instance("B"), "heartbeat", itoa(time.Now().UnixMilli()))
	a.Beat(ctx)
	if !e.mr.Exists(e.k.Conf("cb")) {
		t.Fatal("conference of a live instance without a share yet was deleted")
	}
	e.mr.HSet(e.k.Calls("B"), "t", "2", "c:cb", "2")
	e.mr.HSet(e.k.Conf("cb"), "dialogs", "5")
	a.Beat(ctx)
	if got := e.mr.HGet(e.k.Conf("cb"), "dialogs"); got != "2" {
		t.Errorf("cb dialogs = %q, want B's 2", got)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestLedger_NotesSurviveAnEmptyRedis: a note written just before Redis
// lost its data is written again at the next beats, so the owner still
// ends its dialog; after noteWrites beats it is no longer sent.
func TestLedger_NotesSurviveAnEmptyRedis(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := context.Background()
	ha, hb := newHolder(), newHolder()
	a, b := e.ledger("A", ha), e.ledger("B", hb)
	ha.add("k1", "c1", "n1")
	b.NoteEnded("A", "k1")
	b.flush(ctx)
	e.mr.FlushAll() // before A read it
	b.Beat(ctx)
	a.Beat(ctx)
	if len(ha.d) != 0 {
		t.Fatalf("A still holds %v: the note was lost with Redis", ha.d)
	}
	for range noteWrites {
		b.Beat(ctx)
	}
	e.mr.Del(e.k.Ended("A"))
	b.Beat(ctx)
	if e.mr.Exists(e.k.Ended("A")) {
		t.Errorf("note still sent after %d beats", noteWrites)
	}
}

func TestLedger_RunCoalescesChangesIntoOneWrite(t *testing.T) {
	e := newLedgerEnv(t)
	h := newHolder()
	l := runLedger(t, e, h, 300*time.Millisecond)
	waitWrites := func(n float64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(l.m.writes) < n; {
			if time.Now().After(deadline) {
				t.Fatalf("writes = %v, want %v", testutil.ToFloat64(l.m.writes), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitWrites(1) // the first beat

	// 100 calls set up 10 at a time, 5 ms apart (well inside the window),
	// are written by one flush; written at once, each ten would be one.
	for i := range 100 {
		h.add("d"+strconv.Itoa(i), "conf"+strconv.Itoa(i%10), "n1")
		l.Touch("conf"+strconv.Itoa(i%10), "n1")
		if i%10 == 9 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitWrites(2)
	time.Sleep(400 * time.Millisecond) // a second flush, if any, would have run by now
	if got := testutil.ToFloat64(l.m.writes); got != 2 {
		t.Errorf("writes after 100 changes in 50 ms = %v, want 2 (the beat and one coalesced flush)", got)
	}
	e.want("after the burst", map[string]string{"n1": "100"}, map[string]string{"A": "100"},
		map[string]string{"conf0": "10", "conf9": "10"})

	// A later change opens a new window. conf0 stays in progress: its
	// count is the beat's to write (TestLedger_ConferenceInProgress...).
	h.remove("d0")
	l.Touch("conf0", "n1")
	waitWrites(3)
	e.want("after one end", map[string]string{"n1": "99"}, map[string]string{"A": "99"}, map[string]string{"conf0": "10"})
}

// Only the first change of a window wakes the writer: the others find it
// already woken, queue nothing, and are written by the same flush. A change
// after that flush wakes it again and is written.
func TestLedger_OnlyTheFirstChangeOfAWindowWakesTheWriter(t *testing.T) {
	e := newLedgerEnv(t)
	h := newHolder()
	l := runLedger(t, e, h, 200*time.Millisecond)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("the first beat", func() bool { return testutil.ToFloat64(l.m.writes) >= 1 })

	h.add("d1", "conf1", "n1")
	l.Touch("conf1", "n1")
	waitFor("the writer to take the wake", func() bool { return len(l.wake) == 0 })
	for i := 2; i <= 20; i++ {
		h.add("d"+strconv.Itoa(i), "conf1", "n1")
		l.Touch("conf1", "n1")
		if len(l.wake) != 0 {
			t.Fatalf("change %d inside the window queued a wake for a writer already woken", i)
		}
	}
	waitFor("the window's flush", func() bool { return testutil.ToFloat64(l.m.writes) >= 2 })
	e.want("after the window", map[string]string{"n1": "20"}, map[string]string{"A": "20"}, map[string]string{"conf1": "20"})

	h.remove("d1")
	l.Touch("conf1", "n1")
	waitFor("a new window's flush", func() bool { return testutil.ToFloat64(l.m.writes) >= 3 })
	e.want("after one end", map[string]string{"n1": "19"}, map[string]string{"A": "19"}, map[string]string{"conf1": "20"})
}

// runLedger starts a ledger of instance A over h, beating once an hour and
// writing changes coalesce after the first, until the test ends.
func runLedger(t *testing.T, e *ledgerEnv, h Holder, coalesce time.Duration) *Ledger {
	t.Helper()
	l, err := NewLedger(e.rdb, e.k, LedgerOptions{Self: "A", Interval: time.Hour, Coalesce: coalesce,
		Now: time.Now}, h, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// A conference whose last dialog here ended keeps being rewritten at the
// beats while another instance's share still counts dialogs of it, long
// enough for that share to expire if its instance died: the next beat then
// deletes the key, and the beats carry it no more.
func TestLedger_EndedConferenceRewrittenUntilADeadInstancesShareExpired(t *testing.T) {
	e := newLedgerEnv(t)
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	ledger := func(self string, h Holder) *Ledger {
		l, err := NewLedger(e.rdb, e.k, LedgerOptions{Self: self, Interval: time.Second, LiveFor: 5 * time.Second,
			HeartbeatTimeout: 5 * time.Second, ConfTTL: time.Hour, RedisTimeout: time.Second, ReconcileEvery: time.Hour,
			Now: clock}, h, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	ctx := context.Background()
	ha, hb := newHolder(), newHolder()
	a, b := ledger("A", ha), ledger("B", hb)
	if want := 7 * time.Second; a.opts.Recent != want {
		t.Fatalf("default Recent = %s, want LiveFor + 2 beats = %s", a.opts.Recent, want)
	}
	ha.add("a1", "X", "n1")
	hb.add("b1", "X", "n1")
	a.Beat(ctx)
	b.Beat(ctx)
	e.want("both hold X", map[string]string{"n1": "2"}, map[string]string{"A": "1", "B": "1"}, map[string]string{"X": "2"})

	ha.remove("a1")
	a.Touch("X", "n1")
	a.flush(ctx)
	e.want("A's dialog ended", map[string]string{"n1": "1"}, map[string]string{"B": "1"}, map[string]string{"X": "1"})

	// B dies: its share is not rewritten and expires after LiveFor.
	for range 6 {
		now = now.Add(time.Second)
		e.mr.FastForward(time.Second)
		a.Beat(ctx)
	}
	e.want("B's share expired", map[string]string{}, map[string]string{}, nil, "X")

	if a.isRecent("X") {
		t.Errorf("X still rewritten at the beats after a write found no dialog of it anywhere")
	}

	// A conference held here alone is settled by the write of its end.
	ha.add("a2", "Y", "n1")
	a.Touch("Y", "n1")
	a.flush(ctx)
	if !a.isRecent("Y") {
		t.Fatal("Y, held here, is not rewritten at the beats")
	}
	ha.remove("a2")
	a.Touch("Y", "n1")
	a.flush(ctx)
	e.want("Y ended", map[string]string{}, map[string]string{}, nil, "Y")
	if a.isRecent("Y") {
		t.Errorf("Y still rewritten at the beats after its end was written")
	}
}

func (l *Ledger) isRecent(conf string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.recent[conf]
	return ok
}
