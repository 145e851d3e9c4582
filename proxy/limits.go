package proxy

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"golang.org/x/time/rate"
)

// LimitOptions configures the flood limits (issue 8 item 6). A zero value
// turns every limit off except Timer H: a 2xx that is never ACKed always
// ends its call after AckTimeout.
type LimitOptions struct {
	// SourceRate is how many new dialogs a second one source IP (an IPv6
	// source: its /64) may start; above it they get 503 with Retry-After.
	// 0 turns the per-source limits off.
	SourceRate int
	// SourceBurst is how many it may start at once (default SourceRate).
	SourceBurst int
	// SourceDropRate is how many INVITEs a second (retransmissions
	// included) one source may send before the rest are dropped unanswered,
	// before they are even parsed (default 5 × SourceRate).
	SourceDropRate int
	// SourcePorts caps the relay ports the calls of one source may hold.
	SourcePorts int
	// SourceHalfOpen caps the half-open INVITE dialogs of one source:
	// forwarded and not answered yet, or answered 2xx and not ACKed yet.
	SourceHalfOpen int
	// Near a global limit every new dialog gets 503 before any state is
	// created: dialogs held here, half-open INVITEs, relay ports in use (a
	// percentage of the range), bytes the Go runtime holds (heap, stacks
	// and the rest, less what it returned to the OS). 0 turns one off.
	MaxDialogs      int
	MaxHalfOpen     int
	MaxPortsPercent int
	MaxMemoryBytes  uint64
	// RetryAfter is the Retry-After (seconds) of the limits' 503.
	RetryAfter int
	// AckTimeout is Timer H (64×T1 = 32 s): a call answered 2xx and not
	// ACKed by then is ended and its relay ports freed.
	AckTimeout time.Duration
	// Clock is time.Now unless a test injects one.
	Clock func() time.Time
}

// limitReason is why a new dialog was refused or dropped.
type limitReason uint8

const (
	limitNone limitReason = iota
	limitSourceRate
	limitSourceDrop
	limitSourcePorts
	limitSourceHalfOpen
	limitGlobalDialogs
	limitGlobalHalfOpen
	limitGlobalPorts
	limitMemory
	numLimitReasons
)

// limitReasonNames are the reason label values of sipedge_proxy_limited_total.
var limitReasonNames = [numLimitReasons]string{"", "source_rate", "source_drop", "source_ports", "source_halfopen",
	"global_dialogs", "global_halfopen", "global_ports", "memory"}

func (r limitReason) String() string { return limitReasonNames[r] }

const (
	limitShards = 64
	// maxSources bounds the per-source table; a source is forgotten after
	// sourceIdle without new dialogs once it holds no call, or earlier when
	// the table is full.
	maxSources = 1 << 16
	sourceIdle = time.Minute
)

// source is one source IP's limiter state.
type source struct {
	admit    *rate.Limiter // new dialogs: 503 above
	drop     *rate.Limiter // INVITE datagrams: dropped above
	halfOpen atomic.Int64
	ports    atomic.Int64
	seen     atomic.Int64 // unix nanoseconds of its last new dialog
}

func (s *source) idle() bool { return s.halfOpen.Load() == 0 && s.ports.Load() == 0 }

// callRec is what the limits remember of a new INVITE until it is ACKed
// and its ports are freed.
type callRec struct {
	src      *source // nil: an exempt source (node, trusted network)
	halfOpen bool    // counted in src.halfOpen and limiter.halfOpen
	acked    bool
	deadline time.Time // answered 2xx: ended if not ACKed by then
	ports    int64     // relay ports charged to src
}

type sourceShard struct {
	mu sync.Mutex
	m  map[netip.Addr]*source
	_  [40]byte // keeps neighbouring shards' locks off one cache line
}

type callShard struct {
	mu sync.Mutex
	m  map[string]*callRec
	_  [40]byte
}

// globalUse is this instance's load when a new dialog arrives.
type globalUse struct {
	dialogs              int
	portsInUse, portsCap int
}

// limiter holds the per-source table and the half-open INVITEs. Its
// methods take the time from the caller, so rules are tested with any
// clock; they are safe for concurrent use and take only a shard's lock.
type limiter struct {
	opt      LimitOptions
	seed     maphash.Seed
	sources  [limitShards]sourceShard
	calls    [limitShards]callShard
	nsources atomic.Int64
	halfOpen atomic.Int64
	memory   atomic.Uint64 // bytes the Go runtime holds, sampled
}

// newLimiter applies the defaults.
func newLimiter(o LimitOptions) *limiter {
	if o.SourceRate < 0 {
		o.SourceRate = 0
	}
	if o.SourceBurst <= 0 {
		o.SourceBurst = o.SourceRate
	}
	if o.SourceDropRate <= 0 {
		o.SourceDropRate = 5 * o.SourceRate
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = sip.Timer_H
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	l := &limiter{opt: o, seed: maphash.MakeSeed()}
	for i := range l.sources {
		l.sources[i].m = map[netip.Addr]*source{}
		l.calls[i].m = map[string]*callRec{}
	}
	return l
}

// sourceKey is the table key of a source address: IPv4 as is, IPv6 by /64
// (one host holds a whole /64).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func (l *limiter) sourceShard(a netip.Addr) *sourceShard {
	b := a.As16()
	return &l.sources[maphash.Bytes(l.seed, b[:])%limitShards]
}

func (l *limiter) callShard(id string) *callShard {
	return &l.calls[maphash.String(l.seed, id)%limitShards]
}

// source returns the entry of key, creating it. A full table first
// forgets an idle entry of the same shard.
func (l *limiter) source(key netip.Addr, now time.Time) *source {
	sh := l.sourceShard(key)
	sh.mu.Lock()
	s := sh.m[key]
	if s == nil {
		if len(sh.m) >= maxSources/limitShards {
			for k, old := range sh.m { // random order: a random idle victim
				if old.idle() {
					delete(sh.m, k)
					l.nsources.Add(-1)
					break
				}
			}
		}
		s = &source{
			admit: rate.NewLimiter(rate.Limit(l.opt.SourceRate), l.opt.SourceBurst),
			drop:  rate.NewLimiter(rate.Limit(l.opt.SourceDropRate), max(l.opt.SourceDropRate, l.opt.SourceBurst)),
		}
		sh.m[key] = s
		l.nsources.Add(1)
	}
	sh.mu.Unlock()
	s.seen.Store(now.UnixNano())
	return s
}

// perSource reports whether per-source limits are on.
func (l *limiter) perSource() bool { return l != nil && l.opt.SourceRate > 0 }

// dropDatagram is the hard threshold on the raw datagram: true when src
// has sent more INVITEs than SourceDropRate allows.
func (l *limiter) dropDatagram(src netip.Addr, now time.Time) bool {
	if !l.perSource() {
		return false
	}
	return !l.source(sourceKey(src), now).drop.AllowN(now, 1)
}

// check decides a new dialog from src. The global limits come first and
// apply to everyone; exempt sources skip the per-source ones. dropCheck
// applies the hard threshold here too (requests the datagram filter did
// not see: not INVITE, or not UDP). It returns the source entry (nil when
// exempt or off) the call is charged to.
func (l *limiter) check(src netip.Addr, exempt, invite, dropCheck bool, now time.Time, g globalUse) (*source, limitReason) {
	if l == nil {
		return nil, limitNone
	}
	o := &l.opt
	switch {
	case o.MaxMemoryBytes > 0 && l.memory.Load() >= o.MaxMemoryBytes:
		return nil, limitMemory
	case o.MaxDialogs > 0 && g.dialogs >= o.MaxDialogs:
		return nil, limitGlobalDialogs
	case invite && o.MaxHalfOpen > 0 && l.halfOpen.Load() >= int64(o.MaxHalfOpen):
		return nil, limitGlobalHalfOpen
	case invite && o.MaxPortsPercent > 0 && g.portsCap > 0 && g.portsInUse*100 >= g.portsCap*o.MaxPortsPercent:
		return nil, limitGlobalPorts
	}
	if exempt || !l.perSource() {
		return nil, limitNone
	}
	s := l.source(sourceKey(src), now)
	if dropCheck && !s.drop.AllowN(now, 1) {
		return s, limitSourceDrop
	}
	if !s.admit.AllowN(now, 1) {
		return s, limitSourceRate
	}
	if invite {
		if o.SourceHalfOpen > 0 && s.halfOpen.Load() >= int64(o.SourceHalfOpen) {
			return s, limitSourceHalfOpen
		}
		if o.SourcePorts > 0 && s.ports.Load() >= int64(o.SourcePorts) {
			return s, limitSourcePorts
		}
	}
	return s, limitNone
}

// begin records a new INVITE as half-open, charged to src (nil: exempt).
// A Call-ID already known (an INVITE with the same Call-ID while the first
// is in progress) is not counted twice.
func (l *limiter) begin(id string, src *source) {
	if l == nil {
		return
	}
	sh := l.callShard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if rec := sh.m[id]; rec != nil {
		if !rec.halfOpen && !rec.acked {
			l.openLocked(rec)
		}
		return
	}
	rec := &callRec{src: src}
	l.openLocked(rec)
	sh.m[id] = rec
}

func (l *limiter) openLocked(rec *callRec) {
	rec.halfOpen, rec.deadline = true, time.Time{}
	l.halfOpen.Add(1)
	if rec.src != nil {
		rec.src.halfOpen.Add(1)
	}
}

func (l *limiter) closeLocked(rec *callRec) {
	if !rec.halfOpen {
		return
	}
	rec.halfOpen = false
	l.halfOpen.Add(-1)
	if rec.src != nil {
		rec.src.halfOpen.Add(-1)
	}
}

// forgetLocked drops a record that holds nothing any more.
func (sh *callShard) forgetLocked(id string, rec *callRec) {
	if !rec.halfOpen && rec.ports == 0 {
		delete(sh.m, id)
	}
}

// settle is called when the INVITE transaction of id is over: answered
// 2xx (the dialog stays half-open until its ACK, at most AckTimeout) or
// not (no longer half-open).
func (l *limiter) settle(id string, answered bool, now time.Time) {
	if l == nil {
		return
	}
	sh := l.callShard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	rec := sh.m[id]
	if rec == nil {
		return
	}
	if answered && rec.halfOpen && !rec.acked {
		rec.deadline = now.Add(l.opt.AckTimeout)
		return
	}
	l.closeLocked(rec)
	sh.forgetLocked(id, rec)
}

// acked marks id's 2xx as acknowledged: the dialog is no longer half-open.
func (l *limiter) acked(id string) {
	if l == nil {
		return
	}
	sh := l.callShard(id)
	sh.mu.Lock()
	if rec := sh.m[id]; rec != nil {
		rec.acked = true
		l.closeLocked(rec)
		sh.forgetLocked(id, rec)
	}
	sh.mu.Unlock()
}

// chargePorts records that id holds n relay ports, charged to its
// source: setting, not adding, so a later offer that opened more streams
// is charged once, whoever asks.
func (l *limiter) chargePorts(id string, n int) {
	if l == nil || n <= 0 {
		return
	}
	sh := l.callShard(id)
	sh.mu.Lock()
	if rec := sh.m[id]; rec != nil {
		if rec.src != nil {
			rec.src.ports.Add(int64(n) - rec.ports)
		}
		rec.ports = int64(n)
	}
	sh.mu.Unlock()
}

// freePorts returns id's relay ports to its source's allowance.
func (l *limiter) freePorts(id string) {
	if l == nil {
		return
	}
	sh := l.callShard(id)
	sh.mu.Lock()
	if rec := sh.m[id]; rec != nil && rec.ports > 0 {
		if rec.src != nil {
			rec.src.ports.Add(-rec.ports)
		}
		rec.ports = 0
		sh.forgetLocked(id, rec)
	}
	sh.mu.Unlock()
}

// expired returns the calls answered 2xx whose ACK has not come by their
// deadline (Timer H); they are no longer counted as half-open, and the
// caller ends them.
func (l *limiter) expired(now time.Time) []string {
	var out []string
	for i := range l.calls {
		sh := &l.calls[i]
		sh.mu.Lock()
		for id, rec := range sh.m {
			if rec.halfOpen && !rec.deadline.IsZero() && !now.Before(rec.deadline) {
				l.closeLocked(rec)
				sh.forgetLocked(id, rec)
				out = append(out, id)
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// reconcile frees the ports of established calls whose media is gone
// without the proxy seeing it (anchored reports false).
func (l *limiter) reconcile(anchored func(id string) bool) {
	var gone []string
	for i := range l.calls {
		sh := &l.calls[i]
		sh.mu.Lock()
		for id, rec := range sh.m {
			if !rec.halfOpen && rec.ports > 0 {
				gone = append(gone, id)
			}
		}
		sh.mu.Unlock()
	}
	for _, id := range gone {
		if !anchored(id) {
			l.freePorts(id)
		}
	}
}

// sweep forgets sources that hold nothing and started no dialog within
// sourceIdle; it returns how many are left.
func (l *limiter) sweep(now time.Time) int {
	cut := now.Add(-sourceIdle).UnixNano()
	for i := range l.sources {
		sh := &l.sources[i]
		sh.mu.Lock()
		for k, s := range sh.m {
			if s.idle() && s.seen.Load() < cut {
				delete(sh.m, k)
				l.nsources.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
	return int(l.nsources.Load())
}
