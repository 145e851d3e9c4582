package media

import "time"

// recentSet remembers keys for a fixed time. Keys are added in clock
// order, so the oldest sit at the front of a FIFO and expiring them costs
// O(1) amortized per add, whatever the number of keys: a call end must not
// scan every call that ended in the last minute. Not safe for concurrent
// use: the Manager holds its lock.
type recentSet struct {
	keep  time.Duration
	at    map[string]time.Time
	queue []recentEntry // oldest first from head
	head  int
}

type recentEntry struct {
	key string
	at  time.Time
}

func newRecentSet(keep time.Duration) recentSet {
	return recentSet{keep: keep, at: map[string]time.Time{}}
}

// add remembers key from now on and forgets the keys older than keep.
func (r *recentSet) add(key string, now time.Time) {
	r.expire(now)
	r.at[key] = now
	r.queue = append(r.queue, recentEntry{key: key, at: now})
}

// has reports whether key was added less than keep ago (or not expired yet).
func (r *recentSet) has(key string) bool {
	_, ok := r.at[key]
	return ok
}

func (r *recentSet) len() int { return len(r.at) }

func (r *recentSet) expire(now time.Time) {
	for r.head < len(r.queue) && now.Sub(r.queue[r.head].at) > r.keep {
		e := r.queue[r.head]
		r.queue[r.head] = recentEntry{}
		r.head++
		// Added again later: the newer entry further back owns the key.
		if at, ok := r.at[e.key]; ok && at.Equal(e.at) {
			delete(r.at, e.key)
		}
	}
	// Reclaim the consumed front once it is half the slice.
	if r.head > 0 && r.head >= len(r.queue)/2 {
		n := copy(r.queue, r.queue[r.head:])
		clear(r.queue[n:])
		r.queue = r.queue[:n]
		r.head = 0
	}
}
