package media

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/internal/recent"
	"github.com/sipedge/sipedge/media/policy"
	"github.com/sipedge/sipedge/media/relay"
)

// ErrCallEnded is SDP's answer for a call that ended here less than a
// minute ago: its media is not anchored again.
var ErrCallEnded = errors.New("media: call already ended")

// Ender ends calls this instance holds: a BYE on both legs with
// `Reason: SIP;cause=200;text="<reason>"` (the proxy does it).
type Ender interface {
	EndCalls(ctx context.Context, match func(callID, confID string) bool, reason string) int
}

// EndRequest is the manager asking for the calls that match to be ended
// with reason (a conference ended, a participant went silent). The proxy
// uses the manager and ends calls for it, so the manager hands its
// requests over (EndRequests) instead of holding the proxy: ServeEnds
// answers them.
type EndRequest struct {
	Match  func(callID, confID string) bool
	Reason string
	ended  chan int // how many were ended; buffered
}

// EndRequests are the manager's requests to end calls, asked from its
// Run loop, which waits for each answer. Serve them with ServeEnds.
func (mg *Manager) EndRequests() <-chan EndRequest { return mg.ends }

// ServeEnds ends the calls reqs asks for through e until ctx is done.
func ServeEnds(ctx context.Context, reqs <-chan EndRequest, e Ender) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-reqs:
			r.ended <- e.EndCalls(ctx, r.Match, r.Reason)
		}
	}
}

// endQueue is the manager's Ender: it asks through EndRequests and waits
// for the answer (0 when ctx ends first).
type endQueue chan EndRequest

func (q endQueue) EndCalls(ctx context.Context, match func(callID, confID string) bool, reason string) int {
	r := EndRequest{Match: match, Reason: reason, ended: make(chan int, 1)}
	select {
	case q <- r:
	case <-ctx.Done():
		return 0
	}
	select {
	case n := <-r.ended:
		return n
	case <-ctx.Done():
		return 0
	}
}

// Options configures a Manager.
type Options struct {
	Pool     *relay.Pool
	Redis    redis.UniversalClient
	Keys     keys.Keys
	Instance string
	Defaults Settings // YAML defaults of the sipedge:settings fields
	// Presence is how long an endpoint may be silent and still count as
	// present (SPEC §5: a Host keeps a conference alive only while present).
	Presence time.Duration
	Tick     time.Duration    // how often presence and timers are checked (default 200 ms)
	Clock    func() time.Time // default time.Now
	Log      zerolog.Logger
	Reg      prometheus.Registerer
	// State is the process's shared contract snapshot the settings are
	// read from; nil: the manager reads sipedge:settings itself.
	State func() *contract.Snapshot
	// ConfEnds are the conference ids of "conf-end" messages from the
	// process's one events subscription (contract.Watcher.ConfEnds); nil:
	// an ended conference is found by the periodic pass only.
	ConfEnds <-chan string

	// HeartbeatTimeout: another instance's participants count while its
	// heartbeat (sipedge:instance:<name>) is at most this old (default 5 s).
	HeartbeatTimeout time.Duration
}

// Manager anchors the media of calls and runs the conference rules.
type Manager struct {
	opts    Options
	log     zerolog.Logger
	m       *metrics
	relayMC relay.Config
	ender   Ender           // asks through ends
	ends    chan EndRequest // EndRequests

	mu       sync.Mutex
	sessions map[string]*session
	// ended remembers calls that ended recently: a Joined that arrives
	// after the BYE's Ended (the proxy reports the 2xx asynchronously) must
	// not bring the participant back.
	ended recent.Set

	byConf map[string]int // joined sessions per conference (mg.mu)

	settings settingsCache
	confs    confTracker
	wake     chan string // conference ids to evaluate now

	// life is the manager's lifetime: sessions (their relay streams)
	// derive from it; Run cancels it when it returns.
	life    context.Context
	endLife context.CancelFunc
	stopped bool // Run returned (mu)

	boot     string     // this run's media_boot: its records count while it lives
	writes   writeQueue // participant changes not sent yet
	flushNow chan struct{}
	live     liveness

	// Owned by the Run loop.
	statsFields map[string]struct{} // Call-IDs in the media_stats hash
	evaluated   map[string]bool     // conferences evaluated since the last tick
	poked       map[string]bool     // conferences to evaluate at the next tick
}

// leaveTimeout bounds a participant's removal from Redis after its call.
const leaveTimeout = 5 * time.Second

// New builds a Manager; Run starts its loop, ServeEnds answers its
// requests to end calls.
func New(opts Options) (*Manager, error) {
	if opts.Pool == nil || opts.Redis == nil {
		return nil, errors.New("media: manager needs a relay pool and a Redis client")
	}
	if opts.Tick <= 0 {
		opts.Tick = 200 * time.Millisecond
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Presence <= 0 {
		opts.Presence = 5 * time.Second
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = 5 * time.Second
	}
	m, err := newMetrics(opts.Reg)
	if err != nil {
		return nil, err
	}
	rm, err := relay.NewMetrics(opts.Reg)
	if err != nil {
		return nil, fmt.Errorf("media: relay metrics: %w", err)
	}
	mg := &Manager{
		opts: opts, log: opts.Log, m: m,
		relayMC:   relay.Config{Metrics: rm, Logger: opts.Log, Clock: opts.Clock},
		sessions:  map[string]*session{},
		ended:     recent.New(endedMemory),
		wake:      make(chan string, 1024),
		ends:      make(chan EndRequest),
		byConf:    map[string]int{},
		boot:      newBoot(),
		flushNow:  make(chan struct{}, 1),
		evaluated: map[string]bool{},
		poked:     map[string]bool{},
	}
	mg.ender = endQueue(mg.ends)
	mg.life, mg.endLife = context.WithCancel(context.Background())
	mg.settings.current = opts.Defaults
	mg.confs.deadlines = map[string]time.Time{}
	return mg, nil
}

// Open starts the session of a new call; endpointIsCaller is false for
// calls a media node places into its conference (the callee is then the
// participant's endpoint).
func (mg *Manager) Open(callID, confID string, endpointIsCaller bool) {
	mg.mu.Lock()
	mg.ended.Remove(callID) // a new INVITE reusing the Call-ID (after a 401, 407 or 3xx) is a new call
	s, found := mg.sessionLocked(callID, confID, endpointIsCaller)
	mg.mu.Unlock()
	if found {
		s.mu.Lock()
		s.confID, s.endpointIsCaller = confID, endpointIsCaller
		s.mu.Unlock()
	}
}

// Families tells the session of callID which address family its caller
// and callee speak (from the SIP hops: where the INVITE came from, where
// it goes), so that the first SDP toward a side names a relay address it
// can reach; a side's own SDP, once seen, wins. It matters only with a
// dual-stack relay (media_ip "::").
func (mg *Manager) Families(callID string, callerV6, calleeV6 bool) {
	if !mg.opts.Pool.DualStack() {
		return // one family: every SDP names the one address
	}
	mg.mu.Lock()
	s, ok := mg.sessions[callID]
	mg.mu.Unlock()
	if !ok {
		return
	}
	fam := func(v6 bool) family {
		if v6 {
			return ipv6
		}
		return ipv4
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, b := fam(callerV6), fam(calleeV6)
	if !s.endpointIsCaller {
		a, b = b, a
	}
	for side, f := range [2]family{a, b} {
		if s.v6[side] == unknown {
			s.v6[side] = f
		}
	}
}

// sessionLocked returns the session of callID, creating it with confID
// and endpointIsCaller when there is none (found false). mg.mu is held.
func (mg *Manager) sessionLocked(callID, confID string, endpointIsCaller bool) (s *session, found bool) {
	if s, ok := mg.sessions[callID]; ok {
		return s, true
	}
	ctx, cancel := context.WithCancel(mg.life)
	s = &session{callID: callID, ctx: ctx, cancel: cancel, confID: confID, endpointIsCaller: endpointIsCaller}
	mg.sessions[callID] = s
	mg.m.sessions.Set(float64(len(mg.sessions)))
	return s, false
}

// SDP anchors an SDP body of call callID sent by the caller (fromCaller)
// or the callee, and returns the body to forward. A call this instance
// has not seen before (in-dialog traffic of a call set up by an instance
// that died) is anchored from here on; one that ended here is not
// (ErrCallEnded): a 2xx retransmitted after its INVITE was cancelled, or an
// ACK or re-INVITE behind the BYE, would bind ports no end ever frees. An
// error means the body cannot be anchored and must not be forwarded.
func (mg *Manager) SDP(callID string, fromCaller bool, body []byte) ([]byte, error) {
	mg.mu.Lock()
	if _, live := mg.sessions[callID]; !live && mg.ended.Has(callID) {
		mg.mu.Unlock()
		mg.m.sdpErrors.WithLabelValues(errorClass(ErrCallEnded)).Inc()
		return nil, fmt.Errorf("anchor call %s: %w", callID, ErrCallEnded)
	}
	s, _ := mg.sessionLocked(callID, "", true)
	mg.mu.Unlock()
	out, err := s.rewrite(mg.opts.Pool, mg.relayMC, fromCaller, body)
	if err != nil {
		mg.m.sdpErrors.WithLabelValues(errorClass(err)).Inc()
		return nil, err
	}
	return out, nil
}

// Join is a call answered into its conference.
type Join struct {
	CallID, ConfID string
	AOR            string // the endpoint's address of record (user@host)
	// From trusted X-Sipedge-* headers; empty when absent.
	Role, Kind, KeepAlive string
}

// Joined records an answered call as a participant of its conference. It
// does Redis I/O: call it off the SIP path.
func (mg *Manager) Joined(ctx context.Context, j Join) {
	if j.ConfID == "" {
		return
	}
	mg.mu.Lock()
	if mg.ended.Has(j.CallID) {
		mg.mu.Unlock()
		return
	}
	s, _ := mg.sessionLocked(j.CallID, j.ConfID, true)
	mg.mu.Unlock()

	p := mg.participantOf(j)
	s.mu.Lock()
	if s.joined || s.closed {
		s.mu.Unlock()
		return
	}
	s.confID, s.joined, s.joinedAt, s.part = j.ConfID, true, mg.opts.Clock(), p
	s.present = s.hasMedia
	s.mu.Unlock()
	mg.mu.Lock()
	if mg.byConf[j.ConfID]++; mg.byConf[j.ConfID] == 0 {
		delete(mg.byConf, j.ConfID)
	}
	mg.mu.Unlock()
	if p.Role != "" {
		mg.logJoined(s)
	} // else logged once the flush has read the hosts list (resolveRoles)
	mg.enqueueWrite(s) // the flush that sends it has the conference evaluated
}

func (mg *Manager) logJoined(s *session) {
	s.mu.Lock()
	p, conf, media := s.part, s.confID, s.hasMedia
	s.mu.Unlock()
	mg.log.Info().Str("call_id", s.callID).Str("conf_id", conf).Str("aor", p.AOR).
		Str("role", string(p.Role)).Str("kind", string(p.Kind)).Str("keep_alive", string(p.KeepAlive)).
		Bool("media", media).Msg("participant joined")
}

// participantOf resolves role, kind and keep-alive from the trusted
// headers. A role they do not give is left empty: the write queue's
// flush reads it from the conference's hosts list (resolveRoles), in one
// round trip for every join it carries instead of one per call set-up.
func (mg *Manager) participantOf(j Join) participant {
	p := participant{AOR: j.AOR, Role: policy.RoleHost, Kind: policy.KindNormal}
	if k, err := policy.ParseKind(j.Kind); err == nil {
		p.Kind = k
	} else if j.Kind != "" {
		mg.log.Warn().Str("call_id", j.CallID).Err(err).Msg("X-Sipedge-Participant ignored")
	}
	if r, err := policy.ParseRole(j.Role); err == nil {
		p.Role = r
	} else {
		if j.Role != "" {
			mg.log.Warn().Str("call_id", j.CallID).Err(err).Msg("X-Sipedge-Role ignored")
		}
		p.Role = "" // from the hosts list, at the flush
	}
	p.KeepAlive = policy.DefaultKeepAlive(p.Kind)
	if ka, err := policy.ParseKeepAlive(j.KeepAlive); err == nil {
		p.KeepAlive = ka
	} else if j.KeepAlive != "" {
		mg.log.Warn().Str("call_id", j.CallID).Err(err).Msg("X-Sipedge-Keep-Alive ignored")
	}
	return p
}

// Ended forgets a call: its ports are freed at once, its participant's
// removal is queued for the loop's next flush. No Redis I/O here.
func (mg *Manager) Ended(callID string) {
	now := mg.opts.Clock()
	mg.mu.Lock()
	s, ok := mg.sessions[callID]
	delete(mg.sessions, callID)
	mg.ended.Add(callID, now)
	mg.m.sessions.Set(float64(len(mg.sessions)))
	mg.mu.Unlock()
	if !ok {
		return
	}
	s.close()
	s.mu.Lock()
	joined, conf := s.joined, s.confID
	s.mu.Unlock()
	if joined {
		mg.mu.Lock()
		// Joined may count it just after this (it set joined before our
		// close): the sum still comes back to zero.
		if mg.byConf[conf]--; mg.byConf[conf] == 0 {
			delete(mg.byConf, conf)
		}
		mg.mu.Unlock()
		mg.enqueue(writeOp{kind: opRemove, callID: callID, conf: conf})
	}
}

// stop ends the manager's lifetime (Run does it when it returns): every
// session is closed and its ports freed, the background writes under way
// are waited for, and none starts any more.
func (mg *Manager) stop() {
	mg.mu.Lock()
	mg.stopped = true
	mg.mu.Unlock()
	for _, s := range mg.snapshot() {
		s.close()
	}
	mg.endLife()
}

// endedMemory is how long an ended Call-ID is remembered: far longer than
// a 2xx takes to be reported, short enough to keep the map small.
const endedMemory = time.Minute

// Sessions is the number of calls anchored here.
func (mg *Manager) Sessions() int {
	mg.mu.Lock()
	defer mg.mu.Unlock()
	return len(mg.sessions)
}

// InUse is the number of relay ports bound.
func (mg *Manager) InUse() int { return mg.opts.Pool.InUse() }

// PortUsage is the number of relay ports bound and the size of the range
// (the proxy refuses new calls near it).
func (mg *Manager) PortUsage() (inUse, capacity int) {
	return mg.opts.Pool.InUse(), 2 * mg.opts.Pool.Size()
}

// CallPorts is the number of relay ports call callID holds (0 when it is
// not anchored here): what the proxy charges to the call's source.
func (mg *Manager) CallPorts(callID string) int {
	mg.mu.Lock()
	s := mg.sessions[callID]
	mg.mu.Unlock()
	if s == nil {
		return 0
	}
	return s.ports()
}

// snapshot lists the sessions (for the loop and the status page).
func (mg *Manager) snapshot() []*session {
	mg.mu.Lock()
	defer mg.mu.Unlock()
	out := make([]*session, 0, len(mg.sessions))
	for _, s := range mg.sessions {
		out = append(out, s)
	}
	return out
}

// local reports whether a participant of conf is anchored here.
func (mg *Manager) local(conf string) bool {
	mg.mu.Lock()
	defer mg.mu.Unlock()
	return mg.byConf[conf] > 0
}

// newBoot names a run of this process, unique across restarts.
func newBoot() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatInt(time.Now().UnixMilli(), 36) + hex.EncodeToString(b[:])
}

// poke asks the loop to evaluate a conference now.
func (mg *Manager) poke(confID string) {
	select {
	case mg.wake <- confID:
	default: // the periodic pass will see it
	}
}

func (mg *Manager) redisError(what string, err error) {
	mg.m.redisErrors.Inc()
	mg.log.Warn().Err(err).Msg("media: " + what)
}
