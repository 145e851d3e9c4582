package proxy

import (
	"bytes"
	"hash/maphash"
	"net/netip"
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
// ringing, nor an early-media 183's SDP. It did so for 2-7 % of the calls
// of TestRelay_1000Calls_PortsReturnToZero. Two provisionals (180, 183)
// can likewise reach forward swapped.
//
// What sipgo offers is the goroutine reading the socket, which sees every
// datagram in arrival order: first the read filter (raw bytes, before the
// parse), then the transport handlers (the parsed message, after the
// transaction layer has handed it to its goroutine). noteArrival, from
// the read filter, gives each response to an INVITE forward is relaying
// (found by the branch of the proxy's Via) its place on that branch's
// line. stamp, the transport handler, attaches the parsed message to the
// place; it reads nothing of the message but its status code and source,
// which nobody writes (the relay edits the message in place once it has
// it). forward tells arrived each response it takes from the transaction:
// any provisional placed before it that forward has not relayed is
// relayed first (a copy: sipgo's goroutine may still read the original),
// and a response relayed that way is skipped when the transaction passes
// it up after all. A response whose stamp has not run yet waits for it
// (at most respStampWait), so the relay never edits what stamp may still
// read. Responses are therefore relayed in the order the socket delivered
// them, and none is lost to the race.
//
// Only UDP responses are placed (the read filter sees a TCP stream in
// pieces), and only on branches forward has opened (an INVITE in flight):
// retransmissions after the transaction and responses to other requests
// cost a scan of two header lines. A failover's new branch gets a line of
// its own before it is sent (the old one closes).

// respShards spreads the lock between the read goroutines and the relay
// loops.
const respShards = 16

// respKept bounds the responses placed per branch and not yet consumed
// (a node sending more provisionals than that at once is no real call).
const respKept = 16

// respStampWait bounds how long forward waits for the stamp of a
// response it got first (the read goroutine was descheduled in between).
const respStampWait = 20 * time.Millisecond

// respLine is one INVITE branch being relayed.
type respLine struct {
	branch string
	marks  []respMark      // placed, in arrival order, not yet consumed by forward
	ahead  []*sip.Response // consumed before sipgo passed them up (relayed ahead, or a 100): skipped when they come
	wake   chan struct{}   // closed when a placed response is stamped; nil until forward waits
	buf    [4]respMark     // marks' first storage: 100, 180, 200 need no allocation
}

// respMark is one response's place: its status code from the read
// filter, the parsed message once stamped (nil before, or for ever when
// sipgo could not parse it).
type respMark struct {
	code    int
	res     *sip.Response
	relayed bool
}

// respPending is a placed response whose stamp has not run yet.
type respPending struct {
	src    netip.AddrPort
	code   int
	line   *respLine
	branch string // line's, to find it again (under its shard's lock)
}

// respLines recycles lines: one per INVITE relayed.
var respLines = sync.Pool{New: func() any { return new(respLine) }}

type respShard struct {
	mu sync.Mutex
	m  map[string]*respLine
}

// respSeq keeps the responses of each INVITE branch in arrival order.
type respSeq struct {
	seed   maphash.Seed
	open   atomic.Int32 // branches open: the read filter looks at nothing when none is
	shards [respShards]respShard

	pendMu sync.Mutex
	pend   []respPending // at most one per read goroutine
	npend  atomic.Int32

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

// openLine starts placing the responses of branch (the proxy's own Via
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

// closeLine stops placing l's responses and lets go of what was placed.
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
	if s.npend.Load() > 0 {
		s.pendMu.Lock()
		s.pend = slices.DeleteFunc(s.pend, func(e respPending) bool { return e.line == l })
		s.npend.Store(int32(len(s.pend)))
		s.pendMu.Unlock()
	}
	// forward owns l and is done with it; nothing finds it any more.
	clear(l.buf[:])
	clear(l.ahead)
	*l = respLine{ahead: l.ahead[:0]}
	respLines.Put(l)
}

// noteArrival places a UDP datagram that is a response to an INVITE on
// the line of its top Via branch, if one is open. It runs in the read
// filter, on the goroutine reading the socket, before sipgo parses the
// datagram; it allocates nothing.
func (s *respSeq) noteArrival(info sip.TransportReadProps, data []byte) {
	if s == nil || s.open.Load() == 0 || len(data) < 12 || data[0] != 'S' {
		return
	}
	ua, ok := udpAddrOf(info.RemoteAddr) // srcaddr.go
	if !ok {
		return
	}
	code, branch, ok := scanInviteResponse(data)
	if !ok {
		return
	}
	sh := &s.shards[maphash.Bytes(s.seed, branch)%respShards]
	sh.mu.Lock()
	l := sh.m[string(branch)]
	if l == nil {
		sh.mu.Unlock()
		return
	}
	if len(l.marks) >= respKept {
		l.marks = l.marks[:copy(l.marks, l.marks[1:])]
	}
	l.marks = append(l.marks, respMark{code: code})
	lb := l.branch
	sh.mu.Unlock()
	src := ua.AddrPort()
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	s.pendMu.Lock()
	// The socket's previous datagram from src, if still here, did not
	// parse: its stamp will never come.
	s.pend = slices.DeleteFunc(s.pend, func(e respPending) bool { return e.src == src })
	s.pend = append(s.pend, respPending{src: src, code: code, line: l, branch: lb})
	s.npend.Store(int32(len(s.pend)))
	s.pendMu.Unlock()
}

// stamp is a transport-layer message handler: it runs on the goroutine
// reading the socket, in arrival order, right after noteArrival's read
// filter for the same datagram, and must not block. It reads only the
// status code and the source of the message: forward may be editing the
// rest already.
func (s *respSeq) stamp(msg sip.Message) {
	if s.npend.Load() == 0 {
		return
	}
	res, ok := msg.(*sip.Response)
	if !ok {
		return
	}
	src, err := netip.ParseAddrPort(res.Source())
	if err != nil {
		return
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	code := res.StatusCode
	var e respPending
	found := false
	s.pendMu.Lock()
	for i, p := range s.pend {
		if p.src == src && p.code == code {
			e, found = p, true
			s.pend = slices.Delete(s.pend, i, i+1)
			break
		}
	}
	s.npend.Store(int32(len(s.pend)))
	s.pendMu.Unlock()
	if !found {
		return
	}
	sh := s.shard(e.branch)
	sh.mu.Lock()
	if l := sh.m[e.branch]; l == e.line { // still open (not closed and reused)
		for i := range l.marks {
			if m := &l.marks[i]; m.res == nil && !m.relayed && m.code == code {
				m.res = res
				break
			}
		}
		if l.wake != nil {
			close(l.wake)
			l.wake = nil
		}
	}
	sh.mu.Unlock()
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
		return nil, false // another branch (failover): not placed here
	}
	var buf [4]*sip.Response
	earlier := buf[:0]
	sh := s.shard(l.branch)
	sh.mu.Lock()
	for j, r := range l.ahead {
		if r == res {
			l.ahead = slices.Delete(l.ahead, j, j+1)
			sh.mu.Unlock()
			return nil, res.StatusCode != 100 // a 100 is only looked at (CANCEL may go): never skipped
		}
	}
	i := l.find(res)
	if i < 0 && l.awaitStamp(sh, res) {
		i = l.find(res)
	}
	if i >= 0 {
		earlier = l.take(earlier, i)
		l.marks[i].relayed = true
	} else {
		// Never placed (a stream, or a line full): what was placed and
		// stamped came before it.
		earlier = l.take(earlier, len(l.marks))
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
		return nil, false
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
	return before, false
}

// find is the index of res among l's marks, or -1; the caller holds the
// shard's lock.
func (l *respLine) find(res *sip.Response) int {
	for j := range l.marks {
		if l.marks[j].res == res {
			return j
		}
	}
	return -1
}

// awaitStamp waits, for at most respStampWait, while a mark with res's
// code is placed but not stamped: res's own stamp is then still to run on
// the read goroutine. It reports whether it waited; the caller holds
// sh.mu (released while waiting).
func (l *respLine) awaitStamp(sh *respShard, res *sip.Response) bool {
	waiting := func() bool {
		for _, m := range l.marks {
			if m.res == nil && !m.relayed && m.code == res.StatusCode {
				return true
			}
		}
		return false
	}
	if !waiting() {
		return false
	}
	timer := time.NewTimer(respStampWait)
	defer timer.Stop()
	for waiting() && l.find(res) < 0 {
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
			return true
		}
	}
	return true
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
		if m.res == nil || !m.res.IsProvisional() {
			continue // never parsed; or a final before the one in hand (sipgo passes up one)
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

// scanInviteResponse reads a response's status code and its top Via's
// branch, when its CSeq method is INVITE; it allocates nothing.
func scanInviteResponse(data []byte) (code int, branch []byte, ok bool) {
	line, rest, ok := cutLine(data)
	if !ok || len(line) < 12 || !bytes.HasPrefix(line, []byte("SIP/2.0 ")) || line[11] != ' ' {
		return 0, nil, false
	}
	for _, c := range line[8:11] {
		if c < '0' || c > '9' {
			return 0, nil, false
		}
		code = code*10 + int(c-'0')
	}
	via, cseq, ok := topViaAndCSeq(rest) // as the finished table's scan reads them
	if !ok {
		return 0, nil, false
	}
	if m, ok := cseqMethod(cseq); !ok || string(m) != "INVITE" {
		return 0, nil, false
	}
	if _, _, _, branch, ok = scanVia(via); !ok {
		return 0, nil, false
	}
	return code, branch, true
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
