package admission

// The beat: what is written each Interval, and when it is everything.
//
// A full write deletes this instance's share and writes it again, with
// every conference held here or seen in the last Recent, and recounts each
// of them from the live shares. Its cost grows with the conferences held:
// at 10 000 it keeps the single-threaded redis-server busy for about 60 ms
// while every other client waits, and it was every second's
// (BenchmarkBeat; BENCHMARKS.md "Light beats"). Most beats are light
// instead: the total, the
// node counts, and the conferences changed since they were last written
// (those a window left for the beat, deferInProgress). Nothing else
// differs from what Redis already holds, as long as
//   - the share is the one the last write left: every write stamps it with
//     a generation (field w) and reads the previous one first, so a Redis
//     restarted empty, restored from an old AOF, or flushed is seen by the
//     first write after it;
//   - the other live shares are the ones the last write summed: each
//     share carries its process's epoch (field e), and a write returns the
//     live ones, so an instance whose share expired (it died) or that
//     restarted is seen at the next write, when the sums it was part of
//     must be recounted.
// Either seen by a beat's light write makes the same beat write
// everything; seen by a window's write, the next beat does. A full write
// also comes every FullEvery, for what neither shows (a count edited by
// hand), after a failed write, and after the placements channel was
// subscribed again (a move announced meanwhile may be lost, sticky.go).

import (
	"cmp"
	"context"
	"maps"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons for a full write (sipedge_admission_count_full_writes_total).
const (
	FullStart            = "start"             // no write succeeded yet
	FullPeriodic         = "periodic"          // FullEvery since the last one
	FullShareLost        = "share_lost"        // the share is not what the last write left
	FullInstancesChanged = "instances_changed" // a live share appeared, expired or was rewritten
	FullAfterFailure     = "after_failure"     // a write failed
	FullResubscribed     = "resubscribed"      // the placements channel was subscribed again
)

var fullReasons = []string{FullStart, FullPeriodic, FullShareLost, FullInstancesChanged, FullAfterFailure, FullResubscribed}

// beatState is what the writes found, for choosing the next beat's kind.
type beatState struct {
	epoch string // this process's mark on its share

	mu       sync.Mutex
	gen      uint64 // the last generation handed out
	okGen    uint64 // the generation of the last write that succeeded (0: none)
	lives    string // the other live shares the last write found
	lastFull time.Time
	due      string // why the next beat is full ("": nothing asks)

	lastOK atomic.Int64 // holdings time (Unix ns) of the last write that succeeded (sticky.go)
}

func newBeatState() beatState {
	return beatState{epoch: strconv.FormatUint(rand.Uint64(), 36)}
}

func (b *beatState) nextGen() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	return b.gen
}

// written records a write of generation gen that succeeded; it returns
// true when it found the share lost or rewound.
func (b *beatState) written(gen uint64, w written, at time.Time, full bool) (lost bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	lost = b.okGen != 0 && w.prevGen != strconv.FormatUint(b.okGen, 10)
	if !full {
		found := ""
		switch {
		case b.okGen == 0:
			found = FullStart
		case lost:
			found = FullShareLost
		case w.lives != b.lives:
			found = FullInstancesChanged
		}
		if b.due == "" || lost { // a lost share is the reason to report
			b.due = cmp.Or(found, b.due)
		}
	}
	b.okGen, b.lives = gen, w.lives
	if full {
		b.lastFull = at
	}
	if at.UnixNano() > b.lastOK.Load() {
		b.lastOK.Store(at.UnixNano())
	}
	return lost
}

// request makes the next beat full for reason, unless one is due already.
func (b *beatState) request(reason string) {
	b.mu.Lock()
	if b.due == "" {
		b.due = reason
	}
	b.mu.Unlock()
}

// take says why this beat must be full ("" for a light one) and clears it.
func (b *beatState) take(now time.Time, every time.Duration) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	reason := b.due
	b.due = ""
	switch {
	case reason != "":
	case b.okGen == 0:
		reason = FullStart
	case now.Sub(b.lastFull) >= every:
		reason = FullPeriodic
	}
	return reason
}

// writtenWithin reports whether a write succeeded within d of now.
func (b *beatState) writtenWithin(now time.Time, d time.Duration) bool {
	return now.UnixNano()-b.lastOK.Load() <= int64(d)
}

// Beat consumes the end notes for this instance, then writes its share:
// what changed since the last write (light), or everything (full).
func (l *Ledger) Beat(ctx context.Context) {
	l.writeNotes(ctx, true)
	l.consumeNotes(ctx)
	now := l.opts.Now()
	h := l.src.Holdings()
	l.placed.prune(now, placedKeep)
	l.mu.Lock()
	// Reconcile only once Redis has answered for a few beats: after an
	// outage every live instance must have rewritten its share first.
	recon := now.Sub(l.lastRecon) >= l.opts.ReconcileEvery && l.okStreak >= reconcileAfter
	l.mu.Unlock()

	reason := l.beat.take(now, l.opts.FullEvery)
	if reason == "" {
		sh := l.beatShare(now, h, false)
		if _, err := l.write(ctx, sh, false); err != nil {
			l.beatFailed(ctx, sh, err)
			return
		}
		reason = l.beat.take(now, l.opts.FullEvery) // what the light write found
	}
	if reason != "" {
		sh := l.beatShare(now, h, true)
		w, err := l.write(ctx, sh, true)
		if err != nil {
			l.beatFailed(ctx, sh, err)
			return
		}
		if w.lost {
			reason = FullShareLost // the reason to report, whatever asked for this one
		}
		l.m.fullWrites.WithLabelValues(reason).Inc()
	}
	l.mu.Lock()
	l.okStreak++
	l.mu.Unlock()
	if !recon && l.index.stale() {
		l.scanIndex(ctx) // the reconcile scans too
	}
	if recon {
		if err := l.reconcile(ctx); err != nil {
			l.fail(ctx, "reconcile", err)
			return
		}
		l.mu.Lock()
		l.lastRecon = now
		l.mu.Unlock()
	}
}

// beatShare is the beat's share from the holdings h read at now: the
// conferences changed since their last write, or (full) also every one
// held here or seen within Recent. Either way it takes the changes out of
// the dirty sets.
func (l *Ledger) beatShare(now time.Time, h Holdings, full bool) share {
	sh := share{at: now, total: h.Total, nodes: make(map[string]int, len(h.Nodes)), confs: map[string]ConfHolding{}}
	maps.Copy(sh.nodes, h.Nodes) // h.Nodes may be nil, and the full write after a light one reads it again
	l.mu.Lock()
	defer l.mu.Unlock()
	for n := range l.dirtyNodes {
		if _, ok := sh.nodes[n]; !ok {
			sh.nodes[n] = 0
		}
	}
	for c := range h.Confs {
		l.recent[c] = now
	}
	for c, at := range l.recent {
		if now.Sub(at) > l.opts.Recent && !l.dirtyConfs[c] {
			delete(l.recent, c)
			continue
		}
		if full {
			sh.confs[c] = h.Confs[c]
		}
	}
	for _, set := range []map[string]bool{l.dirtyConfs, l.deferred} {
		for c := range set {
			sh.confs[c] = h.Confs[c]
		}
	}
	l.dirtyConfs, l.dirtyNodes, l.deferred = map[string]bool{}, map[string]bool{}, map[string]bool{}
	return sh
}

// beatFailed keeps what the beat carried for the next one, which writes
// everything.
func (l *Ledger) beatFailed(ctx context.Context, sh share, err error) {
	l.mu.Lock()
	for c := range sh.confs {
		l.dirtyConfs[c] = true
	}
	l.okStreak = 0
	l.mu.Unlock()
	l.beat.request(FullAfterFailure)
	l.fail(ctx, "beat", err)
}
