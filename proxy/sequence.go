package proxy

import (
	"hash/maphash"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Why a sequencer, and why this one.
//
// sipgo reads each socket (the UDP listener, every TCP connection) on one
// goroutine and calls the transport layer's message handlers synchronously
// in arrival order; the first of them, the transaction layer's, starts a new
// goroutine per request (sipgo v1.7.2 TransactionLayer.handleMessage), and
// only that goroutine reaches onRequest. Two requests of one dialog sent
// back to back (an ACK and its BYE 0.1 ms apart) therefore race, and the BYE
// was forwarded first in up to 8 % of calls: the node aborted them.
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
// State is one small record per Call-ID in one of seqShards maps (a lock
// each, so the read goroutines and the transaction goroutines rarely meet),
// dropped seqIdle after its last request, which also bounds how long a
// retransmission is recognised (Timer J: 64*T1).
const (
	seqShards = 64
	seqIdle   = 32 * time.Second
	seqSeen   = 32 // transaction keys remembered per Call-ID
	// seqMaxWait bounds how long a request waits for an earlier one of its
	// dialog; a request that was stamped but will never arrive (lost inside
	// sipgo) costs its successors this once, then it is skipped.
	seqMaxWait = 200 * time.Millisecond
)

// seqKey names a server transaction within a Call-ID.
type seqKey struct {
	seq    uint32
	method sip.RequestMethod
	branch string
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

type seqCall struct {
	queue []*seqEntry // arrival order; handed-on entries are trimmed from the front
	seen  []seqKey    // the last seqSeen transaction keys, oldest first
	wake  chan struct{}
	last  time.Time
}

type seqShard struct {
	mu    sync.Mutex
	calls map[string]*seqCall
	swept time.Time
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
		s.shards[i].calls = make(map[string]*seqCall)
	}
	return s
}

// orderRequests makes the proxy forward each dialog's requests in the order
// they arrived (see above). Call it once the user agent exists, before Serve.
func (p *Proxy) orderRequests() {
	p.seq = newSequencer(seqMaxWait)
	p.seq.onWait, p.seq.onTimeout = p.metrics.orderWaits.Inc, p.metrics.orderTimeouts.Inc
	p.ua.TransportLayer().OnMessage(p.seq.stamp)
}

// seqIdentity extracts a request's Call-ID and transaction key; ok is false
// for requests that are never sequenced (CANCEL, no Call-ID or CSeq).
func seqIdentity(req *sip.Request) (string, seqKey, bool) {
	if req.IsCancel() {
		return "", seqKey{}, false
	}
	id := req.CallID()
	cs := req.CSeq()
	if id == nil || *id == "" || cs == nil {
		return "", seqKey{}, false
	}
	k := seqKey{seq: cs.SeqNo, method: cs.MethodName}
	if k.method == sip.ACK {
		k.method = sip.INVITE
	}
	if via := req.Via(); via != nil {
		k.branch, _ = via.Params.Get("branch")
	}
	return string(*id), k, true
}

func (s *sequencer) shard(id string) *seqShard {
	return &s.shards[maphash.String(s.seed, id)%seqShards]
}

// stamp is a transport-layer message handler: it runs on the goroutine
// reading the socket, in arrival order, and must not block.
func (s *sequencer) stamp(msg sip.Message) {
	req, ok := msg.(*sip.Request)
	if !ok {
		return
	}
	id, k, ok := seqIdentity(req)
	if !ok {
		return
	}
	sh := s.shard(id)
	now := s.now()
	sh.mu.Lock()
	if now.Sub(sh.swept) > time.Second {
		sh.sweep(now)
	}
	c := sh.call(id, now)
	if !c.known(k) {
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
	id, k, ok := seqIdentity(req)
	if !ok {
		return
	}
	sh := s.shard(id)
	now := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c := sh.call(id, now)
	e := c.find(k)
	if e == nil {
		if c.known(k) {
			return // handed on before (a retransmission sipgo passed up again)
		}
		e = c.add(k, seqEntered) // reached here before stamp ran: see above
	}
	if e.state == seqDone {
		return
	}
	e.state = seqEntered
	if c.ahead(e) == 0 {
		return
	}
	if s.onWait != nil {
		s.onWait()
	}
	timer := time.NewTimer(s.maxWait)
	defer timer.Stop()
	for c.ahead(e) > 0 {
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
			if s.onTimeout != nil {
				s.onTimeout()
			}
			c.skipAhead(e)
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
	id, k, ok := seqIdentity(req)
	if !ok {
		return
	}
	sh := s.shard(id)
	sh.mu.Lock()
	if c := sh.calls[id]; c != nil {
		if e := c.find(k); e != nil && e.state != seqDone {
			e.state = seqDone
			c.trim()
			c.signal()
		}
		c.last = s.now()
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
func (sh *seqShard) call(id string, now time.Time) *seqCall {
	c := sh.calls[id]
	if c == nil {
		// The Call-ID may point into the whole received message: keep a copy.
		c = &seqCall{}
		sh.calls[strings.Clone(id)] = c
	}
	c.last = now
	return c
}

// sweep drops records idle for seqIdle; nobody waits on them any more
// (waits are bounded far below that). The caller holds sh.mu.
func (sh *seqShard) sweep(now time.Time) {
	sh.swept = now
	for id, c := range sh.calls {
		if now.Sub(c.last) > seqIdle {
			delete(sh.calls, id)
		}
	}
}

func (c *seqCall) find(k seqKey) *seqEntry {
	for _, e := range c.queue {
		if e.key == k {
			return e
		}
	}
	return nil
}

func (c *seqCall) known(k seqKey) bool {
	for _, s := range c.seen {
		if s == k {
			return true
		}
	}
	return false
}

func (c *seqCall) add(k seqKey, st seqState) *seqEntry {
	k.branch = strings.Clone(k.branch)
	if len(c.seen) == seqSeen {
		copy(c.seen, c.seen[1:])
		c.seen = c.seen[:seqSeen-1]
	}
	c.seen = append(c.seen, k)
	e := &seqEntry{key: k, state: st}
	c.queue = append(c.queue, e)
	return e
}

// ahead counts the entries before e not yet handed on.
func (c *seqCall) ahead(e *seqEntry) int {
	n := 0
	for _, q := range c.queue {
		if q == e {
			return n
		}
		if q.state != seqDone {
			n++
		}
	}
	return 0 // e trimmed: it and everything before it were handed on
}

// skipAhead gives up on the entries before e after a timeout: they no
// longer hold anyone back, and handing them on later changes nothing.
func (c *seqCall) skipAhead(e *seqEntry) {
	for _, q := range c.queue {
		if q == e {
			break
		}
		q.state = seqDone
	}
	c.trim()
	c.signal()
}

func (c *seqCall) trim() {
	i := 0
	for i < len(c.queue) && c.queue[i].state == seqDone {
		c.queue[i] = nil
		i++
	}
	if i == len(c.queue) {
		c.queue = c.queue[:0]
		return
	}
	c.queue = c.queue[i:]
}

func (c *seqCall) signal() {
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
}
