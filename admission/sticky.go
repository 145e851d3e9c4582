package admission

import (
	"context"
	"sync"
	"time"
)

// Sticky placement without a round trip.
//
// The node of an active conference lives in sipedge:conf:<id> (field
// node). Only three things change it: the Ledger's write script, which
// sets it (HSETNX) when the key is created and deletes the key when no live
// instance holds a dialog of the conference any more; Move, on a failover,
// which announces it on the placements channel ("~<id>"); and the key's
// expiry (ConfTTL, renewed by every write that carries the conference, a
// full beat at least every FullEvery). Every write of the Ledger returns
// the node the key holds after the write, for each conference it wrote.
// While this instance keeps holding dialogs of a conference, its own share
// keeps the key alive, so the node the last write returned is what an HGET
// would answer now: Admit uses it instead of asking Redis. It asks Redis,
// as before, when
//   - no write returned a node for it (this instance holds no dialog of
//     it, or its first dialog is not written yet);
//   - no write of the Ledger succeeded within placedFresh (Redis does not
//     answer: the share may expire and the key with it);
//   - the answer predates a write that found the share lost (Redis
//     restarted or restored; ledger_beat.go) or a new subscription to the
//     placements channel (a move may have been announced unheard);
//   - another instance announced a move of it;
//   - this instance holds no dialog of it now;
//   - a "conf-end" was seen for it and the dialogs it held then are not all
//     gone (they are being torn down; a write made after the end that finds
//     none of them lifts that);
//   - the node returned is not healthy in the ring snapshot (Redis may have
//     moved it: a failover through another instance);
//   - this instance failed a dialog of it over (Move rewrote the node).

// StickySource labels sipedge_admission_sticky_lookups_total.
const (
	StickyLocal = "local" // answered from the Ledger's last write
	StickyRedis = "redis" // HGET sipedge:conf:<id> node
)

// placedFresh bounds how long ago the Ledger's last successful write may
// be: it writes at every beat (1 s), each write renews the share and checks
// it is the one the last write left (ledger_beat.go), so nothing written
// for two beats means the writes are failing.
func (l *Ledger) placedFresh() time.Duration { return 2 * l.opts.Interval }

// placedKeep is how long a conf-end mark, or an answer no write
// refreshes, is kept before a beat drops it.
const placedKeep = 30 * time.Second

// placedEntry is the node Redis held for a conference after a write that
// carried this instance's dialogs of it.
type placedEntry struct {
	node string
	at   time.Time // when the holdings of that write were read
}

// placedCache is the Ledger's record of what its writes returned.
type placedCache struct {
	mu        sync.RWMutex
	placed    map[string]placedEntry
	ended     map[string]time.Time // conf-end seen at; cleared by a later write that found no dialog of it
	trustFrom time.Time            // answers from holdings read before this are not used (distrust)
}

// notePlaced records the outcome of a write for one conference: mine is
// what this instance held when the write's holdings were read (at),
// placed the node the key holds after the write ("" if it was deleted).
func (c *placedCache) notePlaced(conf string, mine ConfHolding, placed string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if end, ok := c.ended[conf]; ok {
		if at.After(end) && mine.Dialogs == 0 {
			delete(c.ended, conf) // the ended dialogs are gone
		}
		delete(c.placed, conf)
		return
	}
	if mine.Dialogs <= 0 || placed == "" {
		delete(c.placed, conf)
		return
	}
	if cur, ok := c.placed[conf]; ok && cur.at.After(at) {
		return // a newer write already answered
	}
	if c.placed == nil {
		c.placed = map[string]placedEntry{}
	}
	c.placed[conf] = placedEntry{node: placed, at: at}
}

// distrust sets aside every answer from holdings read before at: the next
// write that carries a conference answers it again.
func (c *placedCache) distrust(at time.Time) {
	c.mu.Lock()
	if at.After(c.trustFrom) {
		c.trustFrom = at
	}
	c.mu.Unlock()
}

// forget drops what a write returned for conf.
func (c *placedCache) forget(conf string) {
	c.mu.Lock()
	delete(c.placed, conf)
	c.mu.Unlock()
}

// end marks conf ended at now: no local answer until its dialogs are gone.
func (c *placedCache) end(conf string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.placed, conf)
	if c.ended == nil {
		c.ended = map[string]time.Time{}
	}
	c.ended[conf] = now
}

// prune drops conf-end marks older than keep (a conference that never
// got back to zero dialogs here is answered from Redis meanwhile), and
// answers no write refreshed for as long (dialogs forgotten by the dialog
// set's sweep are never written as zero).
func (c *placedCache) prune(now time.Time, keep time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for conf, at := range c.ended {
		if now.Sub(at) > keep {
			delete(c.ended, conf)
		}
	}
	for conf, e := range c.placed {
		if now.Sub(e.at) > keep {
			delete(c.placed, conf)
		}
	}
}

func (c *placedCache) get(conf string) (placedEntry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.placed[conf]
	if ok && e.at.Before(c.trustFrom) {
		return placedEntry{}, false
	}
	return e, ok
}

// Placed is the node Redis holds for conference conf, answered without a
// round trip when this instance holds dialogs of it (see above); ok is
// false when Redis must be asked.
func (l *Ledger) Placed(conf string) (string, bool) {
	e, ok := l.placed.get(conf)
	if !ok || !l.beat.writtenWithin(l.opts.Now(), l.placedFresh()) {
		return "", false
	}
	if l.src.ConfHolding(conf).Dialogs <= 0 {
		return "", false
	}
	return e.node, true
}

// ConfEnded is told of every "conf-end <id>" (contract.Watcher.OnConfEnd):
// the dialogs held of it are being torn down and no longer answer its
// placement.
func (l *Ledger) ConfEnded(conf string) {
	if conf != "" {
		l.placed.end(conf, l.opts.Now())
	}
}

// ForgetPlaced drops the local answer for conf (its node was moved); with
// it gone the next window writes conf (deferInProgress), and the answer
// comes back from that write.
func (l *Ledger) ForgetPlaced(conf string) { l.placed.forget(conf) }

// ConfMoved is told of every move announced on the placements channel
// (contract.Watcher.OnConfMoved), this instance's own included.
func (l *Ledger) ConfMoved(conf string) { l.ForgetPlaced(conf) }

// stickyNode is the node conference req.ConfID is placed on, "" if none:
// from the Ledger when it can answer, from Redis otherwise.
func (a *Admitter) stickyNode(ctx context.Context, req Request, nodes NodeView) string {
	if l := a.opts.Ledger; l != nil {
		if node, ok := l.Placed(req.ConfID); ok && nodes.Healthy(node) {
			a.metrics.stickyLocal.Inc()
			return node
		}
		if l.Unplaced(req.ConfID) { // unplaced.go
			a.metrics.stickyUnplaced.Inc()
			return ""
		}
	}
	a.metrics.stickyRedis.Inc()
	lctx, cancel := context.WithTimeout(ctx, a.opts.RedisTimeout)
	node, err := a.confs.Node(lctx, req.ConfID)
	cancel()
	if err != nil {
		a.metrics.redisErrors.WithLabelValues("conf_lookup").Inc()
		a.log.Warn().Err(err).Str("call_id", req.CallID).Str("conf_id", req.ConfID).
			Msg("sticky placement lookup failed; placing by ring")
	}
	return node
}
