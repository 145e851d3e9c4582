// Package recent remembers keys for a fixed time with O(1) amortized
// expiry (call ends in the media manager, node proofs against replay).
package recent

import "time"

// Set remembers keys for a fixed time. Keys are added in clock order, so
// the oldest sit at the front of a FIFO and expiring them costs O(1)
// amortized per Add, whatever the number of keys: a call end must not scan
// every call that ended in the last minute. Not safe for concurrent use:
// its owner holds a lock.
type Set struct {
	keep  time.Duration
	at    map[string]time.Time
	queue []entry // oldest first from head
	head  int
}

type entry struct {
	key string
	at  time.Time
}

// New returns a Set that remembers each key for keep after its last Add.
func New(keep time.Duration) Set {
	return Set{keep: keep, at: map[string]time.Time{}}
}

// Add remembers key from now on and forgets the keys older than keep.
func (r *Set) Add(key string, now time.Time) {
	r.expire(now)
	r.at[key] = now
	r.queue = append(r.queue, entry{key: key, at: now})
}

// Has reports whether key was added less than keep ago (or not expired yet).
func (r *Set) Has(key string) bool {
	_, ok := r.at[key]
	return ok
}

// Remove forgets key now (its queued entry expires without effect).
func (r *Set) Remove(key string) { delete(r.at, key) }

// Len is the number of keys remembered.
func (r *Set) Len() int { return len(r.at) }

func (r *Set) expire(now time.Time) {
	for r.head < len(r.queue) && now.Sub(r.queue[r.head].at) > r.keep {
		e := r.queue[r.head]
		r.queue[r.head] = entry{}
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
