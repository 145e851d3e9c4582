package ring

import (
	"sync"
	"time"
)

// DefaultSuspectHold is how long a node that failed a call stays out of the
// ring when no good probe clears it first: longer than the default probes
// take to mark a dead node down (3 failures 2 s apart), so a dead node does
// not flap back in between, and short enough that a node that refused one
// call while probing is off is not lost for long.
const DefaultSuspectHold = 10 * time.Second

// suspects are nodes the proxy saw fail a call (no answer, 408, 5xx). A
// suspect node takes no new dialog until its next good OPTIONS probe sent
// after the mark, or until the hold ends, whichever is first: Kamailio's
// dispatcher marks a destination inactive on the failure itself and lets
// its probing bring it back. The clock is passed in, so tests need no sleep.
type suspects struct {
	hold time.Duration

	mu     sync.Mutex
	marked map[string]time.Time // node -> time of its last mark
}

func newSuspects(hold time.Duration) *suspects {
	if hold <= 0 {
		hold = DefaultSuspectHold
	}
	return &suspects{hold: hold, marked: map[string]time.Time{}}
}

// mark makes name suspect from now and reports whether it was not already.
// A mark on a suspect node restarts its hold.
func (s *suspects) mark(name string, now time.Time) (fresh bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.marked[name]
	fresh = !ok || now.Sub(at) >= s.hold
	s.marked[name] = now
	return fresh
}

// active reports whether name is suspect at now.
func (s *suspects) active(name string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.marked[name]
	if ok && now.Sub(at) >= s.hold {
		delete(s.marked, name)
		return false
	}
	return ok
}

// probed clears name after a good probe sent at sent, and reports whether
// that ended a suspicion. A probe sent before the mark says nothing about
// the node since: it keeps the mark.
func (s *suspects) probed(name string, sent, now time.Time) (cleared bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.marked[name]
	if !ok || at.After(sent) {
		return false
	}
	delete(s.marked, name)
	return now.Sub(at) < s.hold
}

// count is the number of nodes suspect at now.
func (s *suspects) count(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, at := range s.marked {
		if now.Sub(at) < s.hold {
			n++
		}
	}
	return n
}

// retain forgets nodes that are no longer known.
func (s *suspects) retain(known map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.marked {
		if !known[name] {
			delete(s.marked, name)
		}
	}
}

// MarkSuspect takes a node that just failed a call out of the ring at once,
// without waiting for the probes to mark it down: new dialogs avoid it, and
// conferences placed on it move (Healthy is false while it is suspect). It
// returns to the ring at its next good probe sent after the mark, or when
// the hold ends. The ring is never emptied by suspicion: when every node is
// suspect they all stay in. It reports whether the node was not suspect
// already; an unknown node is ignored.
func (w *Watcher) MarkSuspect(name string) bool {
	if _, known := w.Snapshot().Node(name); !known {
		return false
	}
	if !w.sus.mark(name, w.opts.Now()) {
		return false
	}
	w.m.suspectMarks.Inc()
	w.log.Warn().Str("node", name).Stringer("hold", w.sus.hold).
		Msg("media node suspect: it failed a call; out of the ring until a good probe or the hold ends")
	w.mu.Lock()
	w.rebuildLocked()
	w.mu.Unlock()
	return true
}
