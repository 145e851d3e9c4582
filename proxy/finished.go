package proxy

import (
	"bytes"
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

// finishedEntry is what one finished transaction keeps besides its key.
type finishedEntry struct {
	expires int64 // unix nanoseconds

	// Server transactions over UDP, a non-INVITE: the destination
	// (destLen bytes, encodeDest) and then the final response as sent;
	// an INVITE answered 2xx: "". Client INVITE transactions: "".
	// put copies it; get returns it from the table's log, where it stays
	// unchanged for as long as anything refers to it.
	data string
	sum  uint64 // client: the Call-ID's hash (callSum), checked on the retransmission
	conn uint16 // server: 1 + index of the socket it was answered from (finished.conns)
	flag bool   // client: the request came from the dialog's caller
}

// Why the table holds no pointer per entry.
//
// At 3000 calls/s the table holds some 290 000 entries (three per call,
// 32 s each). Held as strings in a map and a queue, each entry was three
// objects for the garbage collector to find and mark in every cycle, and
// marking was a quarter of the proxy's CPU at that rate, its mark phases
// tens of milliseconds long on one core (BENCHMARKS.md, "The finished
// table without pointers"). So an entry's key and data are copied into
// the shard's log, blocks of bytes written once in insertion order and
// dropped whole when their last entry expires; the map is keyed by the
// key's 64-bit hash and its values, like the queue's items, hold no
// pointer. The collector sees a few blocks, not the entries.

// finishedRec is an entry as the map holds it: where its key and data lie
// in the log. It must hold no pointer (TestFinishedTable_HoldsNoPointerPerEntry).
type finishedRec struct {
	expires int64
	sum     uint64
	block   uint32 // number of the log block (finishedShard.base + index in blocks)
	off     uint32 // key at off, data right after it
	keyLen  uint32
	dataLen uint32
	conn    uint16
	flag    bool
}

// finishedItem is a queue entry: the map key to drop when it expires,
// unless the key was put again since (a newer entry, a later expiry). It
// must hold no pointer.
type finishedItem struct {
	hash    uint64
	expires int64
	block   uint32 // its record's log block: blocks before the oldest item's are free
}

// queueChunk is a block of the queue: the queue grows and shrinks by
// blocks, so it never holds more than one block it does not use and is
// never copied. next comes first: the only word of it the collector reads.
type queueChunk struct {
	next  *queueChunk
	items [128]finishedItem
}

// logBlockSize is the size of a log block: a UDP final response is at
// most 1300 bytes (sipgo's bound), so at most a twelfth of a block is
// left unused at its end.
const logBlockSize = 16 << 10

type finishedShard struct {
	mu sync.Mutex
	m  map[uint64]finishedRec // by the key's maphash (see finishedTable.shard)
	// The queue in insertion (and expiry) order: from head.items[hi] to
	// tail.items[ti-1].
	head, tail *queueChunk
	hi, ti     int
	chunks     int // blocks in the queue
	peak       int // most entries held since the map was made
	// The log: blocks[k] is block number base+k; entries are appended to
	// the last one, used bytes of it written.
	blocks [][]byte
	base   uint32
	used   int
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

// write appends key and data to the log: the block and offset they lie at.
func (s *finishedShard) write(key, data string) (block, off uint32) {
	n := len(key) + len(data)
	if len(s.blocks) == 0 || s.used+n > len(s.blocks[len(s.blocks)-1]) {
		s.blocks = append(s.blocks, make([]byte, max(logBlockSize, n)))
		s.used = 0
	}
	b := s.blocks[len(s.blocks)-1]
	copy(b[s.used:], key)
	copy(b[s.used+len(key):], data)
	off = uint32(s.used)
	s.used += n
	return s.base + uint32(len(s.blocks)-1), off
}

// key and data are a record's bytes in the log. Written once, they never
// change, and a block dropped from the log stays while data refers to it.
func (s *finishedShard) key(r finishedRec) []byte {
	b := s.blocks[r.block-s.base]
	return b[r.off : r.off+r.keyLen]
}

func (s *finishedShard) data(r finishedRec) string {
	if r.dataLen == 0 {
		return ""
	}
	b := s.blocks[r.block-s.base]
	return unsafeString(b[r.off+r.keyLen : r.off+r.keyLen+r.dataLen])
}

// freeBlocks drops the log blocks no queued entry lies in any more.
func (s *finishedShard) freeBlocks() {
	keep := uint32(0) // none, when the queue is empty
	if !s.empty() {
		keep = s.base + uint32(len(s.blocks)) - s.head.items[s.hi].block
	}
	drop := len(s.blocks) - int(keep)
	if drop <= 0 {
		return
	}
	clear(s.blocks[:drop])
	s.blocks = s.blocks[drop:]
	s.base += uint32(drop)
	if len(s.blocks) == 0 {
		s.blocks, s.used = nil, 0
	}
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
		t.shards[i].m = make(map[uint64]finishedRec)
	}
	return t
}

// A key's hash picks its shard and is its map key there. Two keys of the
// same 64-bit hash (seeded per process: nobody outside can aim for one)
// would share a record: get compares the key, so the older one is only
// forgotten early, never answered with the other's data.
func (t *finishedTable) shard(h uint64) *finishedShard { return &t.shards[h%finishedShards] }

// callSum is the hash a client entry keeps of a Call-ID.
func (t *finishedTable) callSum(id string) uint64 { return maphash.String(t.seed, id) }

// put records e under key, both copied into the table. It replaces an
// entry of the same key.
func (t *finishedTable) put(key string, e finishedEntry) {
	now := t.now().UnixNano()
	expires := now + int64(t.ttl)
	h := maphash.String(t.seed, key)
	s := t.shard(h)
	s.mu.Lock()
	s.expire(now)
	for len(s.m) >= t.max && !s.empty() {
		s.pop()
		if t.onEvict != nil {
			t.onEvict()
		}
	}
	block, off := s.write(key, e.data)
	s.m[h] = finishedRec{expires: expires, sum: e.sum, block: block, off: off, keyLen: uint32(len(key)),
		dataLen: uint32(len(e.data)), conn: e.conn, flag: e.flag}
	s.peak = max(s.peak, len(s.m))
	s.push(finishedItem{hash: h, expires: expires, block: block})
	s.freeBlocks() // what the expiries above freed
	s.mu.Unlock()
}

// get returns the live entry of key.
func (t *finishedTable) get(key []byte) (finishedEntry, bool) {
	return t.lookup(maphash.Bytes(t.seed, key), key)
}

// getString is get for a key held as a string.
func (t *finishedTable) getString(key string) (finishedEntry, bool) {
	return t.lookup(maphash.String(t.seed, key), unsafeBytes(key))
}

func (t *finishedTable) lookup(h uint64, key []byte) (finishedEntry, bool) {
	now := t.now().UnixNano()
	s := t.shard(h)
	s.mu.Lock()
	r, ok := s.m[h]
	if !ok || r.expires <= now || !bytes.Equal(s.key(r), key) {
		s.mu.Unlock()
		return finishedEntry{}, false
	}
	e := finishedEntry{expires: r.expires, data: s.data(r), sum: r.sum, conn: r.conn, flag: r.flag}
	s.mu.Unlock()
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
		s.freeBlocks()
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
// since (a newer entry has a later expiry). Its log block is freed by
// freeBlocks.
func (s *finishedShard) pop() {
	it := s.head.items[s.hi]
	s.head.items[s.hi] = finishedItem{}
	s.hi++
	if r, ok := s.m[it.hash]; ok && r.expires == it.expires {
		delete(s.m, it.hash)
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
		s.m, s.peak = make(map[uint64]finishedRec), 0
	}
}
