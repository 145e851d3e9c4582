package proxy

import (
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Why responses need ordering too.
//
// sipgo hands every response to a goroutine of its own (v1.7.3
// TransactionLayer.handleMessage), and the client transaction's state
// machine takes them in whatever order those goroutines reach it. A node
// sends 180 and its 200 a few microseconds apart: when the 200's goroutine
// wins, the transaction moves to Accepted and drops the 180 (RFC 6026
// §7.2: 1xx in Accepted are not passed up), so the caller never hears its
// ringing, nor an early-media 183's SDP. It did so for 7 % of the calls of
// TestRelay_1000Calls_PortsReturnToZero on a loaded machine. Two
// provisionals (180, 183) can likewise reach forward swapped.
//
// As for requests (sequence.go), what sipgo offers is the transport
// handler run on the read goroutine, in arrival order, after the
// transaction layer's: stamp notes there every response to an INVITE that
// forward is relaying (by the branch of the proxy's Via), holding the
// parsed message. forward tells arrived each response it takes from the
// transaction: any provisional stamped before it that forward has not
// relayed is relayed first (a copy: sipgo's goroutine may still be reading
// the original), and a response already relayed that way is skipped when
// the transaction passes it up after all. Responses are therefore relayed
// in the order the socket delivered them, none is lost to the race, and
// nothing waits.
//
// Only branches forward has opened are stamped (an INVITE in flight), so
// retransmissions after the transaction and responses to other requests
// cost one lookup. A branch the failover runner moves to is not opened:
// its responses keep sipgo's order.

// respShards spreads the lock between the read goroutines and the relay
// loops.
const respShards = 16

// respStampWait bounds how long forward waits for the stamp of a
// response it got first (the read goroutine was descheduled in between).
const respStampWait = 20 * time.Millisecond

// respKept bounds the responses stamped per branch and not yet consumed
// (a node sending more provisionals than that at once is no real call).
const respKept = 16

// respLine is one INVITE branch being relayed.
type respLine struct {
	branch string
	marks  []respMark      // stamped, in arrival order, not yet consumed by forward
	early  []*sip.Response // taken by forward before their stamp ran
	ahead  []*sip.Response // stamped ones consumed before sipgo passed them up (relayed ahead, or a 100): skipped when they come
	wake   chan struct{}   // closed when an early one is stamped; nil until forward waits
	buf    [4]respMark     // marks' first storage: 100, 180, 200 need no allocation
}

// respLines recycles lines: one per INVITE relayed.
var respLines = sync.Pool{New: func() any { return new(respLine) }}

type respMark struct {
	res     *sip.Response
	relayed bool
}

type respShard struct {
	mu sync.Mutex
	m  map[string]*respLine
}

// respSeq keeps the responses of each INVITE branch in arrival order.
type respSeq struct {
	seed   maphash.Seed
	open   atomic.Int32 // branches open: stamp returns at once when none is
	shards [respShards]respShard
	// onEarly counts provisionals relayed ahead of a response that
	// overtook them; nil counts nothing.
	onEarly func()
}

func newRespSeq() *respSeq {
	s := &respSeq{seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*respLine)
	}
	return s
}

// orderResponses makes forward relay each INVITE's responses in the order
// they arrived (see above). Call it once the user agent exists, before
// Serve.
func (p *Proxy) orderResponses() {
	p.rseq = newRespSeq()
	p.rseq.onEarly = p.metrics.orderEarly.Inc
	p.ua.TransportLayer().OnMessage(p.rseq.stamp)
}

func (s *respSeq) shard(branch string) *respShard {
	return &s.shards[maphash.String(s.seed, branch)%respShards]
}

// openLine starts stamping the responses of branch (the proxy's own Via
// branch of an INVITE about to be sent). Nil when s is nil.
func (s *respSeq) openLine(branch string) *respLine {
	if s == nil || branch == "" {
		return nil
	}
	l := respLines.Get().(*respLine)
	l.branch = branch
	l.marks = l.buf[:0]
	sh := s.shard(branch)
	sh.mu.Lock()
	if _, dup := sh.m[branch]; !dup {
		sh.m[branch] = l
		s.open.Add(1)
		sh.mu.Unlock()
		return l
	}
	sh.mu.Unlock()
	respLines.Put(l)
	return nil // branches are random: never
}

// closeLine stops stamping l's branch and lets go of what was stamped.
func (s *respSeq) closeLine(l *respLine) {
	if s == nil || l == nil {
		return
	}
	sh := s.shard(l.branch)
	sh.mu.Lock()
	if sh.m[l.branch] == l {
		delete(sh.m, l.branch)
		s.open.Add(-1)
	}
	sh.mu.Unlock()
	// forward owns l and is done with it; stamp finds it no more.
	clear(l.buf[:])
	clear(l.early)
	clear(l.ahead)
	*l = respLine{early: l.early[:0], ahead: l.ahead[:0]}
	respLines.Put(l)
}

// stamp is a transport-layer message handler: it runs on the goroutine
// reading the socket, in arrival order, and must not block.
func (s *respSeq) stamp(msg sip.Message) {
	if s.open.Load() == 0 {
		return
	}
	res, ok := msg.(*sip.Response)
	if !ok {
		return
	}
	if cs := res.CSeq(); cs == nil || cs.MethodName != sip.INVITE {
		return
	}
	via := res.Via()
	if via == nil {
		return
	}
	branch, _ := via.Params.Get("branch")
	if branch == "" {
		return
	}
	sh := s.shard(branch)
	sh.mu.Lock()
	if l := sh.m[branch]; l != nil {
		l.stamped(res)
	}
	sh.mu.Unlock()
}

// stamped records res on l; the caller holds the shard's lock.
func (l *respLine) stamped(res *sip.Response) {
	for i, e := range l.early {
		if e == res { // forward has it already: nothing came between
			l.early = append(l.early[:i], l.early[i+1:]...)
			if l.wake != nil {
				close(l.wake)
				l.wake = nil
			}
			return
		}
	}
	if len(l.marks) >= respKept {
		l.marks = l.marks[:copy(l.marks, l.marks[1:])]
	}
	l.marks = append(l.marks, respMark{res: res})
}

// arrived is told each response forward takes from the client transaction
// of l. It returns copies of the provisionals (other than 100) that came
// off the socket before res and were not relayed, to relay first, in
// order; skip is true when res itself was relayed that way already.
func (s *respSeq) arrived(l *respLine, res *sip.Response) (before []*sip.Response, skip bool) {
	if s == nil || l == nil {
		return nil, false
	}
	via := res.Via()
	if via == nil {
		return nil, false
	}
	if b, _ := via.Params.Get("branch"); b != l.branch {
		return nil, false // another branch (failover): not stamped here
	}
	var ahead [4]*sip.Response
	earlier := ahead[:0]
	sh := s.shard(l.branch)
	sh.mu.Lock()
	for j, r := range l.ahead {
		if r == res {
			l.ahead = append(l.ahead[:j], l.ahead[j+1:]...)
			sh.mu.Unlock()
			return nil, res.StatusCode != 100 // a 100 is only looked at (CANCEL may go): never skipped
		}
	}
	i := -1
	for j := range l.marks {
		if l.marks[j].res == res {
			i = j
			break
		}
	}
	switch {
	case i >= 0:
		earlier = l.take(earlier, i)
		l.marks[i].relayed = true
	default:
		// Not stamped yet: the read goroutine stamps in order, so every
		// response stamped so far came before it. Its stamp is what the
		// read goroutine does next: wait for it (bounded: a response that
		// did not come from a socket is never stamped), since the relay
		// edits res and stamp reads it.
		earlier = l.take(earlier, len(l.marks))
		if len(l.early) < respKept {
			l.early = append(l.early, res)
			l.awaitStamp(sh, res)
		}
	}
	// Drop the consumed head of the list.
	n := 0
	for n < len(l.marks) && l.marks[n].relayed {
		n++
	}
	if n > 0 {
		k := copy(l.marks, l.marks[n:])
		clear(l.marks[k:])
		l.marks = l.marks[:k]
	}
	sh.mu.Unlock()
	if len(earlier) == 0 {
		return nil, skip
	}
	before = make([]*sip.Response, len(earlier))
	for j, r := range earlier {
		// sipgo's goroutine of r may still read it (its key, its state
		// machine): the relay edits a copy.
		before[j] = r.Clone()
		if s.onEarly != nil {
			s.onEarly()
		}
	}
	return before, skip
}

// awaitStamp waits, for at most respStampWait, until stamp has seen res;
// the caller holds sh.mu (released while waiting).
func (l *respLine) awaitStamp(sh *respShard, res *sip.Response) {
	var timer *time.Timer
	for slices.Contains(l.early, res) {
		if timer == nil {
			timer = time.NewTimer(respStampWait)
			defer timer.Stop()
		}
		if l.wake == nil {
			l.wake = make(chan struct{})
		}
		w := l.wake
		sh.mu.Unlock()
		select {
		case <-w:
			sh.mu.Lock()
		case <-timer.C:
			sh.mu.Lock()
			return
		}
	}
}

// take appends the unrelayed provisionals (other than 100) among the
// first n marks to dst and marks all n relayed; the caller holds the lock.
func (l *respLine) take(dst []*sip.Response, n int) []*sip.Response {
	for j := 0; j < n; j++ {
		m := &l.marks[j]
		if m.relayed {
			continue
		}
		m.relayed = true
		if !m.res.IsProvisional() {
			continue // a final before the one in hand: sipgo passes up no more than one
		}
		if m.res.StatusCode != 100 {
			dst = append(dst, m.res)
		}
		if len(l.ahead) < respKept {
			l.ahead = append(l.ahead, m.res) // sipgo may still pass it up
		}
	}
	return dst
}

// relayEarly relays a provisional that came off the socket before the
// response forward is handling, as forward relays a provisional.
func (p *Proxy) relayEarly(in *sip.Request, tx sip.ServerTransaction, res *sip.Response, info fwdInfo,
	canceller *cancelSender, clock *inviteClock) {
	if canceller != nil {
		canceller.provisional()
	}
	clock.response(res)
	r := upstream(res)
	if r == nil {
		return
	}
	p.stripUntrustedResponse(res, r)
	p.anchorResponse(in, r, info)
	p.metrics.countResponse(r)
	if _, err := p.respondTx(tx, r); err != nil {
		p.notSent("relayed response", callID(in), r.StatusCode, err)
	}
}

// ourINVITEBranch is the branch forward opens a response line for: that
// of the proxy's Via of an INVITE it sends ("" for other requests).
func ourINVITEBranch(out *sip.Request) string {
	if !out.IsInvite() {
		return ""
	}
	via := out.Via()
	if via == nil {
		return ""
	}
	b, _ := via.Params.Get("branch") // the proxy's own string (branch), not a piece of a datagram
	return b
}
