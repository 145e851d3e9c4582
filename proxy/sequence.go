package proxy

import (
	"context"
	"hash/maphash"
	"runtime"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Why a sequencer, and why this one.
//
// sipgo reads each socket (the UDP listener, every TCP connection) on one
// goroutine and calls the transport layer's message handlers synchronously
// in arrival order; the first of them, the transaction layer's, starts a new
// goroutine per request (sipgo v1.7.3 TransactionLayer.handleMessage), and
// only that goroutine reaches onRequest. Two requests of one dialog sent
// back to back (an ACK and its BYE 0.1 ms apart) therefore race, and the BYE
// was forwarded first in 8 % (issue 8) to 56 % (TestOrder_, loopback) of
// calls: the node aborted them.
//
// Sharding requests onto per-Call-ID workers would need to run before the
// transaction layer, which sipgo offers no hook for. What it does offer is a
// second transport handler, run on the read goroutine right after the
// transaction layer's: there stamp records each request's place in its
// Call-ID's queue, in the order the socket delivered it. onRequest then
// waits until every request of that Call-ID stamped before it has been
// handed on (forwarded, answered or dropped), bounded by maxWait so that a
// request lost inside sipgo never blocks its dialog for long.
//
// Entries are keyed by transaction (CSeq number, method, Via branch), not
// by message, because sipgo absorbs some requests that were stamped: a
// retransmission of a live transaction, the ACK of a non-2xx answer (same
// branch as its INVITE), a matched CANCEL. Those never reach onRequest, so
// they must not get a place of their own: a key already seen for the
// Call-ID is not queued again, CANCEL is never queued (it must overtake its
// INVITE), and ACK counts as INVITE as in sipgo's server transaction key.
// The transaction goroutine may reach wait before the read goroutine has
// run stamp for its request; wait then queues the request itself. That is
// still arrival order: the read goroutine cannot have read the next message
// before it stamps this one, so nothing of the dialog can be queued between.
//
// State is one small record per Call-ID (its last seqSeen transaction keys)
// in one of seqShards maps, a lock each, so the read goroutines and the
// transaction goroutines rarely meet. sweep, run by Serve, drops a record
// seqIdle after the last message of its Call-ID: a transaction that is
// still being retransmitted (UDP: its final answer not yet received)
// refreshes it at least every T2 (4 s), so its retransmissions stay
// recognised; over TCP nothing is retransmitted.
const (
	seqShards = 64
	seqIdle   = 6 * time.Second // > T2
	seqSeen   = 32              // transaction keys remembered per Call-ID
	// seqMaxWait bounds how long a request waits for an earlier one of its
	// dialog; a request that was stamped but will never arrive (lost inside
	// sipgo) costs its successors this once, then it is skipped.
	seqMaxWait = 200 * time.Millisecond
)

// seqKey names a server transaction within a Call-ID: its CSeq number and
// a hash of its method and Via branch (sequencer.key). It holds no
// pointer, and neither does the rest of a record but its list and wake
// channel: at 3000 calls/s some 18 000 records are held (seqIdle), and
// the collector has one object per Call-ID to mark, not four (the
// Call-ID, the record, two branches).
type seqKey struct {
	seq uint32
	tx  uint64
}

type seqState uint8

const (
	seqQueued  seqState = iota // stamped, its goroutine not yet in onRequest
	seqEntered                 // in onRequest, waiting or being handled
	seqDone                    // handed on (or skipped after a timeout)
)

type seqEntry struct {
	key   seqKey
	state seqState
}

// seqCall is one Call-ID: its last seqSeen transactions in arrival order.
// Those handed on stay listed, so that a retransmission of one is known.
type seqCall struct {
	entries []seqEntry
	wake    chan struct{} // closed when an entry is handed on; nil until someone waits
	last    int64         // unix nanoseconds of its last message
	first   [2]seqEntry   // entries' first backing array: an INVITE and its BYE, or one transaction at a time
}

// seqShard holds the records of its Call-IDs by their hash (sequencer.id).
// Two Call-IDs of the same 64-bit hash (seeded per process: nobody outside
// can aim for one) would share a record: their requests would be ordered
// as one dialog's, which delays nothing that arrived in order.
type seqShard struct {
	mu    sync.Mutex
	calls map[uint64]*seqCall
}

// sequencer keeps the requests of each Call-ID in arrival order.
type sequencer struct {
	seed    maphash.Seed
	shards  [seqShards]seqShard
	maxWait time.Duration
	now     func() time.Time
	// onWait and onTimeout count requests that had to wait for an earlier
	// one and waits that ran out; nil counts nothing.
	onWait, onTimeout func()
}

func newSequencer(maxWait time.Duration) *sequencer {
	s := &sequencer{seed: maphash.MakeSeed(), maxWait: maxWait, now: time.Now}
	for i := range s.shards {
		s.shards[i].calls = make(map[uint64]*seqCall)
	}
	return s
}

// orderRequests makes the proxy forward each dialog's requests in the order
// they arrived (see above). Call it once the user agent exists, before Serve.
func (p *Proxy) orderRequests() {
	p.seq = newSequencer(seqMaxWait)
	p.seq.onWait, p.seq.onTimeout = p.metrics.orderWaits.Inc, p.metrics.orderTimeouts.Inc
	p.ua.TransportLayer().OnMessage(p.seq.stamp)
	p.orderResponses() // the same for responses (respseq.go)
}

// identity is a request's Call-ID hash and transaction key; ok is false
// for requests that are never sequenced (CANCEL, no Call-ID or CSeq).
func (s *sequencer) identity(req *sip.Request) (uint64, seqKey, bool) {
	if req.IsCancel() {
		return 0, seqKey{}, false
	}
	id := req.CallID()
	cs := req.CSeq()
	if id == nil || *id == "" || cs == nil {
		return 0, seqKey{}, false
	}
	branch := ""
	if via := req.Via(); via != nil {
		branch, _ = via.Params.Get("branch")
	}
	return s.id(string(*id)), s.key(cs.SeqNo, cs.MethodName, branch), true
}

// id is a Call-ID's hash: its shard and its key there.
func (s *sequencer) id(callID string) uint64 { return maphash.String(s.seed, callID) }

// key is the transaction key of CSeq number seq, method and Via branch;
// ACK counts as INVITE, as in sipgo's server transaction key.
func (s *sequencer) key(seq uint32, method sip.RequestMethod, branch string) seqKey {
	if method == sip.ACK {
		method = sip.INVITE
	}
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(string(method))
	h.WriteByte(0)
	h.WriteString(branch)
	return seqKey{seq: seq, tx: h.Sum64()}
}

func (s *sequencer) shard(id uint64) *seqShard { return &s.shards[id%seqShards] }

// stamp is a transport-layer message handler: it runs on the goroutine
// reading the socket, in arrival order, and must not block.
func (s *sequencer) stamp(msg sip.Message) {
	req, ok := msg.(*sip.Request)
	if !ok {
		return
	}
	id, k, ok := s.identity(req)
	if !ok {
		return
	}
	sh := s.shard(id)
	now := s.now().UnixNano()
	sh.mu.Lock()
	c := sh.call(id, now)
	if c.index(k) < 0 {
		c.add(k, seqQueued)
	}
	sh.mu.Unlock()
}

// wait blocks until every request of req's Call-ID that arrived before it
// has been handed on, or maxWait passed. Every wait is paired with
// handedOn.
func (s *sequencer) wait(req *sip.Request) {
	if s == nil {
		return
	}
	id, k, ok := s.identity(req)
	if !ok {
		return
	}
	sh := s.shard(id)
	now := s.now().UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c := sh.call(id, now)
	i := c.index(k)
	switch {
	case i < 0:
		i = c.add(k, seqEntered) // reached here before stamp ran: see above
	case c.entries[i].state == seqDone:
		return // handed on before (a retransmission sipgo passed up again)
	default:
		c.entries[i].state = seqEntered
	}
	if c.ahead(i) == 0 {
		return
	}
	if s.onWait != nil {
		s.onWait()
	}
	timer := time.NewTimer(s.maxWait)
	defer timer.Stop()
	for {
		if c.wake == nil {
			c.wake = make(chan struct{})
		}
		w := c.wake
		sh.mu.Unlock()
		select {
		case <-w:
			sh.mu.Lock()
		case <-timer.C:
			sh.mu.Lock()
			if i = c.index(k); i > 0 {
				if s.onTimeout != nil {
					s.onTimeout()
				}
				c.skip(i)
			}
			return
		}
		if i = c.index(k); i < 0 || c.ahead(i) == 0 {
			return
		}
	}
}

// handedOn marks req as forwarded, answered or dropped, letting the next
// request of its Call-ID go. Calling it again is harmless.
func (s *sequencer) handedOn(req *sip.Request) {
	if s == nil {
		return
	}
	id, k, ok := s.identity(req)
	if !ok {
		return
	}
	sh := s.shard(id)
	sh.mu.Lock()
	if c := sh.calls[id]; c != nil {
		if i := c.index(k); i >= 0 && c.entries[i].state != seqDone {
			c.entries[i].state = seqDone
			c.signal()
		}
		c.last = s.now().UnixNano()
	}
	sh.mu.Unlock()
}

// len is the number of Call-IDs tracked (for tests).
func (s *sequencer) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.calls)
		sh.mu.Unlock()
	}
	return n
}

// call returns id's record, creating it; the caller holds sh.mu.
func (sh *seqShard) call(id uint64, now int64) *seqCall {
	c := sh.calls[id]
	if c == nil {
		c = &seqCall{}
		c.entries = c.first[:0]
		sh.calls[id] = c
	}
	c.last = now
	return c
}

// sweep drops, every interval until ctx ends, the records idle for
// seqIdle; nobody waits on them any more (waits are bounded far below).
func (s *sequencer) sweep(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.sweepOnce(s.now())
	}
}

func (s *sequencer) sweepOnce(now time.Time) {
	idleSince := now.Add(-seqIdle).UnixNano()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for id, c := range sh.calls {
			if c.last < idleSince {
				delete(sh.calls, id)
			}
		}
		sh.mu.Unlock()
		// At 3000 calls/s the whole pass is about 2 ms: let the SIP path
		// run between shards rather than after it (one core: GOMAXPROCS 1).
		runtime.Gosched()
	}
}

func (c *seqCall) index(k seqKey) int {
	for i := range c.entries {
		if c.entries[i].key == k {
			return i
		}
	}
	return -1
}

// add appends a transaction and returns its index. The list keeps the last
// seqSeen: the oldest handed-on entry makes room (if none is, the oldest:
// seqSeen requests of one Call-ID in flight at once is no real dialog).
func (c *seqCall) add(k seqKey, st seqState) int {
	if len(c.entries) >= seqSeen {
		drop := 0
		for i := range c.entries {
			if c.entries[i].state == seqDone {
				drop = i
				break
			}
		}
		c.entries = append(c.entries[:drop], c.entries[drop+1:]...)
		c.signal() // a waiter may have waited for the dropped one
	}
	c.entries = append(c.entries, seqEntry{key: k, state: st})
	return len(c.entries) - 1
}

// ahead counts the entries before index i not yet handed on.
func (c *seqCall) ahead(i int) int {
	n := 0
	for _, e := range c.entries[:i] {
		if e.state != seqDone {
			n++
		}
	}
	return n
}

// skip gives up on the entries before index i after a timeout: they no
// longer hold anyone back, and handing them on later changes nothing.
func (c *seqCall) skip(i int) {
	for j := range c.entries[:i] {
		c.entries[j].state = seqDone
	}
	c.signal()
}

func (c *seqCall) signal() {
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
}

// hasKey reports whether a request of Call-ID id with transaction key k
// came in lately (the INVITE an ACK of a non-2xx answer belongs to).
func (s *sequencer) hasKey(callID string, seq uint32, method sip.RequestMethod, branch string) bool {
	if s == nil {
		return false
	}
	id, k := s.id(callID), s.key(seq, method, branch)
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c := sh.calls[id]
	return c != nil && c.index(k) >= 0
}
