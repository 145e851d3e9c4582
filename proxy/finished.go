package proxy

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// The finished-transactions table: what the proxy keeps of a transaction
// it has answered, so that sipgo's transaction (the parsed request, the
// response, timers, channels, callbacks) can be terminated at once
// instead of living on its RFC 3261 timers for 32 s.
//
//   - a non-INVITE server transaction over UDP keeps the rendered bytes of
//     its final response, where they went and the socket they left from:
//     a retransmitted request gets the same bytes again (§17.2.2, Timer J);
//   - an INVITE server transaction answered 2xx keeps only its key: a
//     retransmitted INVITE is dropped (RFC 6026 §7.1, Timer L);
//   - a client INVITE transaction that got a 2xx keeps its branch, the
//     Call-ID and the direction: what relaying the node's 2xx
//     retransmissions upstream needs (RFC 6026 §7.2, Timer M).
//
// Entries expire ttl (64*T1, 32 s) after they were put. Insert, lookup
// and expiry are O(1): each shard has a map and a queue in insertion order
// (every entry has the same lifetime, so the queue is also in expiry
// order). No goroutine per entry: expired entries are dropped on insert
// and by sweep, run by Serve.

// finishedShards spreads the table's lock: every UDP datagram looks up.
const finishedShards = 16

// DefaultFinishedMax bounds the table: at 32 s per entry, 2^20 entries
// hold 32 000 transactions a second (three per call). Past it the oldest
// entry goes early (counted in sipedge_sip_finished_evicted_total).
const DefaultFinishedMax = 1 << 20

// finishedEntry is what one finished transaction keeps: 40 bytes besides
// its key and data.
type finishedEntry struct {
	expires int64 // unix nanoseconds

	// Server transactions over UDP, a non-INVITE: the destination
	// (destLen bytes, encodeDest) and then the final response as sent;
	// an INVITE answered 2xx: "". Client INVITE transactions: the Call-ID.
	data string
	sum  uint64 // client: the Call-ID's hash (callSum), checked on the retransmission
	conn uint16 // server: 1 + index of the socket it was answered from (finished.conns)
	flag bool   // client: the request came from the dialog's caller
}

type finishedItem struct {
	key     string
	expires int64
}

// queueChunk is a block of the queue: the queue grows and shrinks by
// blocks, so it never holds more than one block it does not use and is
// never copied.
type queueChunk struct {
	items [128]finishedItem
	next  *queueChunk
}

type finishedShard struct {
	mu sync.Mutex
	m  map[string]finishedEntry
	// The queue in insertion (and expiry) order: from head.items[hi] to
	// tail.items[ti-1].
	head, tail *queueChunk
	hi, ti     int
	chunks     int // blocks in the queue
	peak       int // most entries held since the map was made
}

func (s *finishedShard) empty() bool { return s.head == nil || (s.head == s.tail && s.hi == s.ti) }

func (s *finishedShard) push(it finishedItem) {
	if s.tail == nil || s.ti == len(s.tail.items) {
		c := new(queueChunk)
		if s.tail == nil {
			s.head, s.hi = c, 0
		} else {
			s.tail.next = c
		}
		s.tail, s.ti = c, 0
		s.chunks++
	}
	s.tail.items[s.ti] = it
	s.ti++
}

// finishedTable maps transaction keys to finishedEntry.
type finishedTable struct {
	ttl     time.Duration
	max     int // per shard
	now     func() time.Time
	seed    maphash.Seed
	shards  [finishedShards]finishedShard
	onEvict func() // an entry dropped before it expired (the bound)
}

// newFinishedTable makes a table whose entries live ttl and of which at
// most max are held (0: DefaultFinishedMax); now is the clock.
func newFinishedTable(ttl time.Duration, max int, now func() time.Time) *finishedTable {
	if max <= 0 {
		max = DefaultFinishedMax
	}
	if now == nil {
		now = time.Now
	}
	t := &finishedTable{ttl: ttl, max: (max + finishedShards - 1) / finishedShards, now: now, seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[string]finishedEntry)
	}
	return t
}

func (t *finishedTable) shard(key string) *finishedShard {
	return &t.shards[maphash.String(t.seed, key)%finishedShards]
}

func (t *finishedTable) shardBytes(key []byte) *finishedShard {
	return &t.shards[maphash.Bytes(t.seed, key)%finishedShards]
}

// callSum is the hash a client entry keeps of a Call-ID.
func (t *finishedTable) callSum(id string) uint64 { return maphash.String(t.seed, id) }

// put records e under key (which must not share memory with a parsed
// message: it is held for ttl). It replaces an entry of the same key.
func (t *finishedTable) put(key string, e finishedEntry) {
	now := t.now().UnixNano()
	e.expires = now + int64(t.ttl)
	s := t.shard(key)
	s.mu.Lock()
	s.expire(now)
	for len(s.m) >= t.max && !s.empty() {
		s.pop()
		if t.onEvict != nil {
			t.onEvict()
		}
	}
	s.m[key] = e
	s.peak = max(s.peak, len(s.m))
	s.push(finishedItem{key: key, expires: e.expires})
	s.mu.Unlock()
}

// get returns the live entry of key.
func (t *finishedTable) get(key []byte) (finishedEntry, bool) {
	now := t.now().UnixNano()
	s := t.shardBytes(key)
	s.mu.Lock()
	e, ok := s.m[string(key)]
	s.mu.Unlock()
	if !ok || e.expires <= now {
		return finishedEntry{}, false
	}
	return e, true
}

// getString is get for a key held as a string.
func (t *finishedTable) getString(key string) (finishedEntry, bool) {
	now := t.now().UnixNano()
	s := t.shard(key)
	s.mu.Lock()
	e, ok := s.m[key]
	s.mu.Unlock()
	if !ok || e.expires <= now {
		return finishedEntry{}, false
	}
	return e, true
}

// len is the number of entries held (expired ones not yet swept included).
func (t *finishedTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// sweep drops expired entries every interval until ctx is done, calling
// after (may be nil) with the table's size each time.
func (t *finishedTable) sweep(ctx context.Context, interval time.Duration, after func(int)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.expireAll()
			if after != nil {
				after(t.len())
			}
		}
	}
}

// expireAll drops every expired entry.
func (t *finishedTable) expireAll() {
	now := t.now().UnixNano()
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.expire(now)
		s.mu.Unlock()
	}
}

// expire drops the entries at the head of the queue that have expired.
func (s *finishedShard) expire(now int64) {
	for !s.empty() && s.head.items[s.hi].expires <= now {
		s.pop()
	}
}

// pop drops the oldest item, and its entry unless the key was put again
// since (a newer entry has a later expiry).
func (s *finishedShard) pop() {
	it := s.head.items[s.hi]
	s.head.items[s.hi] = finishedItem{}
	s.hi++
	if e, ok := s.m[it.key]; ok && e.expires == it.expires {
		delete(s.m, it.key)
	}
	switch {
	case s.head == s.tail && s.hi == s.ti: // empty: keep the block, from its start
		s.hi, s.ti = 0, 0
	case s.hi == len(s.head.items): // the head block is used up
		s.head, s.hi = s.head.next, 0
		s.chunks--
	}
	if len(s.m) == 0 && s.peak > 1024 {
		// Idle after a burst: give the map's memory back.
		s.m, s.peak = make(map[string]finishedEntry), 0
	}
}
