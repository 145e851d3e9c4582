package admission

import (
	"context"
	"sync"
	"time"
)

// New conferences placed without a round trip.
//
// The sticky lookup (sticky.go) asks Redis for the node of a conference
// this instance holds no dialog of. For a conference nobody placed yet,
// the usual case for its first caller, the answer is "none" and the ring
// decides. The Ledger keeps the set of conferences that have a placement
// in Redis, so that "none" is known without asking:
//   - a scan of the conference keys gives every key that exists: at once
//     after each (re)subscription, at every beat while the set is not
//     complete, and with every reconcile (ReconcileEvery);
//   - the write script announces on the placements channel every
//     conference it gives a node (the HSETNX that creates the field; Move
//     only rewrites an existing one), and the write and reconcile scripts
//     every conference key they delete; the contract watcher passes them
//     on in the order they were published.
//
// A conference in neither is answered "no placement" locally (source
// "unplaced"); one in the set is still asked of Redis (it may be placed
// off the ring). The set is trusted only while it is complete: after a scan
// that began after the current subscription to the placements channel was
// confirmed (announcements published before it are lost), and with no
// Redis failure seen since that scan began. Until then every lookup goes to
// Redis as before. Keys that expire (or that something else deletes) stay
// in the set until the next scan: a lookup of one is asked of Redis, which
// answers none.
//
// What this does not change: two instances placing the same new
// conference at the same moment agree because they hash it onto the same
// ring, as they did when both asked Redis before either had written it.

// StickyUnplaced labels the lookups answered "no placement" from the set.
const StickyUnplaced = "unplaced"

// placementIndex is the set of conferences known to have a placement.
type placementIndex struct {
	mu         sync.Mutex
	subscribed bool   // the placements channel's subscription was confirmed once
	gen        uint64 // bumped at every (re)subscription and Redis failure
	readyGen   uint64 // gen at which the last complete scan began (0: none)
	scanGen    uint64 // gen at which the scan in progress began
	known      map[string]struct{}
	during     map[string]bool // announced while a scan runs (placed or gone): newer than what it read
}

// resubscribed is called at every confirmation of the subscription.
func (x *placementIndex) resubscribed() {
	x.mu.Lock()
	x.subscribed = true
	x.gen++
	x.mu.Unlock()
}

// lost is called on any Redis failure: announcements may have been lost
// with it, so the set waits for the next scan.
func (x *placementIndex) lost() {
	x.mu.Lock()
	x.gen++
	x.mu.Unlock()
}

// announced records a conference given a node (placed) or whose key was
// deleted (!placed). Both come in the order the scripts ran, so the last
// one says whether the key has a node now.
func (x *placementIndex) announced(conf string, placed bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !placed {
		delete(x.known, conf)
		if x.during != nil {
			x.during[conf] = false
		}
		return
	}
	if x.known == nil {
		x.known = map[string]struct{}{}
	}
	x.known[conf] = struct{}{}
	if x.during != nil {
		x.during[conf] = true
	}
}

// scanStarted is called before a scan of the conference keys.
func (x *placementIndex) scanStarted() {
	x.mu.Lock()
	x.scanGen = x.gen
	x.during = map[string]bool{}
	x.mu.Unlock()
}

// scanDone replaces the set by the keys a complete scan found and what was
// announced meanwhile; ok is false when the scan failed.
func (x *placementIndex) scanDone(confs []string, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !ok {
		x.scanGen, x.during = 0, nil
		return
	}
	known := make(map[string]struct{}, len(confs)+len(x.during))
	for _, c := range confs {
		known[c] = struct{}{}
	}
	for c, placed := range x.during {
		if placed {
			known[c] = struct{}{}
		} else {
			delete(known, c)
		}
	}
	if x.subscribed && x.scanGen == x.gen {
		x.readyGen = x.gen
	} else {
		for c := range x.known { // not known complete: keep everything
			if placed, seen := x.during[c]; !seen || placed {
				known[c] = struct{}{}
			}
		}
	}
	x.known, x.scanGen, x.during = known, 0, nil
}

// completeLocked: a scan began after the latest subscription and no
// failure came since (readyGen is 0 until a scan after a subscription).
func (x *placementIndex) completeLocked() bool { return x.readyGen != 0 && x.readyGen == x.gen }

// ready reports whether the set is complete.
func (x *placementIndex) ready() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.completeLocked()
}

// stale reports whether a scan would make the set complete: subscribed,
// and not complete.
func (x *placementIndex) stale() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.subscribed && !x.completeLocked()
}

// unplaced reports whether conf is known to have no placement.
func (x *placementIndex) unplaced(conf string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.completeLocked() {
		return false
	}
	_, ok := x.known[conf]
	return !ok
}

// ConfPlaced is told of every message of the placements channel
// (contract.Watcher.OnConfPlaced).
func (l *Ledger) ConfPlaced(conf string, placed bool) { l.index.announced(conf, placed) }

// PlacementsSubscribed is told of every (re)subscription to the
// placements channel (contract.Watcher.OnPlacementsSubscribed): Run
// rebuilds the index at once.
func (l *Ledger) PlacementsSubscribed() {
	l.index.resubscribed()
	// Moves announced while unsubscribed were not heard: no local answer
	// until a full write gives them again (sticky.go).
	l.placed.distrust(l.opts.Now())
	l.beat.request(FullResubscribed)
	select {
	case l.rescan <- struct{}{}:
	default: // a rebuild is already due
	}
}

// scanIndex rebuilds the index alone (the reconcile's scan rebuilds it
// too); a failure waits for the next beat, which scans again while the
// index is not ready.
func (l *Ledger) scanIndex(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 2*max(l.opts.RedisTimeout, time.Second))
	defer cancel()
	if _, err := l.scanConfs(sctx); err != nil && ctx.Err() == nil {
		// Counted, not logged: it fails with Redis, whose outage the count
		// writes already log.
		l.index.lost()
		l.m.errors.WithLabelValues("index").Inc()
	}
}

// Unplaced reports whether conference conf is known, without asking Redis,
// to have no placement: the ring places it.
func (l *Ledger) Unplaced(conf string) bool { return l.index.unplaced(conf) }
