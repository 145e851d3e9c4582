package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipedge/sipedge/ring"
)

var (
	srcA = netip.MustParseAddr("192.0.2.1")
	srcB = netip.MustParseAddr("192.0.2.2")
	t0   = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

// step is one action on a limiter in a rule's story; check steps assert
// the verdict of a new dialog at that moment.
type step struct {
	at      time.Duration // since t0
	do      string        // check, checkInvite, begin, settle, settle2xx, ack, ports, free, drop
	src     netip.Addr
	call    string
	n       int
	exempt  bool
	g       globalUse
	memory  uint64
	want    limitReason
	wantHit bool // drop: want the datagram dropped
}

func run(t *testing.T, l *limiter, steps []step) {
	t.Helper()
	srcs := map[string]*source{}
	for i, s := range steps {
		now := t0.Add(s.at)
		if s.memory > 0 {
			l.memory.Store(s.memory)
		}
		switch s.do {
		case "check", "checkInvite":
			src, got := l.check(s.src, s.exempt, s.do == "checkInvite", s.do == "check", now, s.g)
			if got != s.want {
				t.Fatalf("step %d (%s at %v): got %q, want %q", i, s.do, s.at, got, s.want)
			}
			if got == limitNone && s.call != "" {
				srcs[s.call] = src
				l.begin(s.call, src)
			}
		case "settle":
			l.settle(s.call, false, now)
		case "settle2xx":
			l.settle(s.call, true, now)
		case "ack":
			l.acked(s.call)
		case "ports":
			l.chargePorts(s.call, s.n)
		case "free":
			l.freePorts(s.call)
		case "drop":
			if got := l.dropDatagram(s.src, now); got != s.wantHit {
				t.Fatalf("step %d (drop at %v): dropped %v, want %v", i, s.at, got, s.wantHit)
			}
		default:
			t.Fatalf("step %d: unknown action %q", i, s.do)
		}
	}
}

func TestLimiter_Rules(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name  string
		opt   LimitOptions
		steps []step
	}{
		{"source rate: burst passes, then 503 until a token returns", LimitOptions{SourceRate: 2, SourceBurst: 2}, []step{
			{do: "check", src: srcA},
			{do: "check", src: srcA},
			{do: "check", src: srcA, want: limitSourceRate},
			{at: 499 * ms, do: "check", src: srcA, want: limitSourceRate},
			{at: 500 * ms, do: "check", src: srcA},
		}},
		{"source rate: another source has its own allowance", LimitOptions{SourceRate: 1, SourceBurst: 1}, []step{
			{do: "check", src: srcA},
			{do: "check", src: srcA, want: limitSourceRate},
			{do: "check", src: srcB},
		}},
		{"source rate: an IPv6 source is its /64", LimitOptions{SourceRate: 1, SourceBurst: 1}, []step{
			{do: "check", src: netip.MustParseAddr("2001:db8::1")},
			{do: "check", src: netip.MustParseAddr("2001:db8::ffff:2"), want: limitSourceRate},
			{do: "check", src: netip.MustParseAddr("2001:db8:0:1::1")},
		}},
		{"exempt source (node, trusted network): no per-source limit", LimitOptions{SourceRate: 1, SourceBurst: 1, SourceHalfOpen: 1}, []step{
			{do: "checkInvite", src: srcA, exempt: true, call: "c1"},
			{do: "checkInvite", src: srcA, exempt: true, call: "c2"},
			{do: "checkInvite", src: srcA, exempt: true, call: "c3"},
		}},
		{"per-source limits off: nothing refused", LimitOptions{}, []step{
			{do: "checkInvite", src: srcA, call: "c1"},
			{do: "checkInvite", src: srcA, call: "c2"},
			{do: "drop", src: srcA},
		}},
		{"hard threshold: INVITE datagrams above the drop rate are dropped", LimitOptions{SourceRate: 1, SourceBurst: 1, SourceDropRate: 3}, []step{
			{do: "drop", src: srcA},
			{do: "drop", src: srcA},
			{do: "drop", src: srcA},
			{do: "drop", src: srcA, wantHit: true},
			{do: "drop", src: srcB},
			{at: 334 * ms, do: "drop", src: srcA},
		}},
		{"hard threshold: default is 5 x the rate", LimitOptions{SourceRate: 1, SourceBurst: 1}, []step{
			{do: "drop", src: srcA}, {do: "drop", src: srcA}, {do: "drop", src: srcA}, {do: "drop", src: srcA}, {do: "drop", src: srcA},
			{do: "drop", src: srcA, wantHit: true},
		}},
		{"hard threshold in check: a request the datagram filter did not see", LimitOptions{SourceRate: 10, SourceBurst: 10, SourceDropRate: 10}, []step{
			{do: "check", src: srcA}, {do: "check", src: srcA}, {do: "check", src: srcA}, {do: "check", src: srcA}, {do: "check", src: srcA},
			{do: "check", src: srcA}, {do: "check", src: srcA}, {do: "check", src: srcA}, {do: "check", src: srcA}, {do: "check", src: srcA},
			{do: "check", src: srcA, want: limitSourceDrop},
		}},
		{"half-open cap: unanswered INVITEs, then one fails and frees its place", LimitOptions{SourceRate: 100, SourceBurst: 100, SourceHalfOpen: 2}, []step{
			{do: "checkInvite", src: srcA, call: "c1"},
			{do: "checkInvite", src: srcA, call: "c2"},
			{do: "checkInvite", src: srcA, call: "c3", want: limitSourceHalfOpen},
			{do: "check", src: srcA}, // not an INVITE: no half-open cap
			{do: "checkInvite", src: srcB, call: "b1"},
			{do: "settle", call: "c1"},
			{do: "checkInvite", src: srcA, call: "c4"},
		}},
		{"half-open cap: 2xx not ACKed stays half-open, the ACK frees it", LimitOptions{SourceRate: 100, SourceBurst: 100, SourceHalfOpen: 1}, []step{
			{do: "checkInvite", src: srcA, call: "c1"},
			{do: "settle2xx", call: "c1"},
			{do: "checkInvite", src: srcA, call: "c2", want: limitSourceHalfOpen},
			{do: "ack", call: "c1"},
			{do: "checkInvite", src: srcA, call: "c3"},
		}},
		{"half-open cap: an ACK racing ahead of the settle counts", LimitOptions{SourceRate: 100, SourceBurst: 100, SourceHalfOpen: 1}, []step{
			{do: "checkInvite", src: srcA, call: "c1"},
			{do: "ack", call: "c1"},
			{do: "settle2xx", call: "c1"},
			{do: "checkInvite", src: srcA, call: "c2"},
		}},
		{"port cap: a source holding its ports gets 503 until they are freed", LimitOptions{SourceRate: 100, SourceBurst: 100, SourcePorts: 8}, []step{
			{do: "checkInvite", src: srcA, call: "c1"},
			{do: "ports", call: "c1", n: 4},
			{do: "ack", call: "c1"},
			{do: "checkInvite", src: srcA, call: "c2"},
			{do: "ports", call: "c2", n: 4},
			{do: "ack", call: "c2"},
			{do: "checkInvite", src: srcA, call: "c3", want: limitSourcePorts},
			{do: "checkInvite", src: srcB, call: "b1"},
			{do: "free", call: "c1"},
			{do: "checkInvite", src: srcA, call: "c4"},
		}},
		{"global dialogs: everyone, exempt too, gets 503", LimitOptions{MaxDialogs: 10}, []step{
			{do: "check", src: srcA, g: globalUse{dialogs: 9}},
			{do: "check", src: srcA, g: globalUse{dialogs: 10}, want: limitGlobalDialogs},
			{do: "check", src: srcB, exempt: true, g: globalUse{dialogs: 10}, want: limitGlobalDialogs},
		}},
		{"global half-open", LimitOptions{MaxHalfOpen: 2}, []step{
			{do: "checkInvite", src: srcA, call: "c1"},
			{do: "checkInvite", src: srcB, exempt: true, call: "c2"},
			{do: "checkInvite", src: srcB, call: "c3", want: limitGlobalHalfOpen},
			{do: "check", src: srcB},
			{do: "settle", call: "c2"},
			{do: "checkInvite", src: srcB, call: "c3"},
		}},
		{"global ports: near the range's end new calls get 503", LimitOptions{MaxPortsPercent: 90}, []step{
			{do: "checkInvite", src: srcA, g: globalUse{portsInUse: 89, portsCap: 100}},
			{do: "checkInvite", src: srcA, g: globalUse{portsInUse: 90, portsCap: 100}, want: limitGlobalPorts},
			{do: "check", src: srcA, g: globalUse{portsInUse: 90, portsCap: 100}}, // no media: no ports
			{do: "checkInvite", src: srcA}, // anchoring off
		}},
		{"memory: runtime memory above the limit refuses new dialogs", LimitOptions{MaxMemoryBytes: 1 << 30}, []step{
			{do: "check", src: srcA, memory: 1<<30 - 1},
			{do: "check", src: srcA, memory: 1 << 30, want: limitMemory},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			run(t, newLimiter(c.opt), c.steps)
		})
	}
}

func TestLimiter_TimerH_EndsA2xxNeverACKed(t *testing.T) {
	cases := []struct {
		name    string
		acked   bool
		answer  bool
		checkAt time.Duration
		want    []string
	}{
		{"2xx not ACKed, before Timer H", false, true, 31 * time.Second, nil},
		{"2xx not ACKed, at Timer H (32 s)", false, true, 32 * time.Second, []string{"c1"}},
		{"2xx ACKed: never ended by Timer H", true, true, time.Hour, nil},
		{"INVITE not answered: nothing to end", false, false, time.Hour, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLimiter(LimitOptions{SourceRate: 10, SourceBurst: 10})
			src, _ := l.check(srcA, false, true, false, t0, globalUse{})
			l.begin("c1", src)
			l.chargePorts("c1", 4)
			l.settle("c1", c.answer, t0)
			if c.acked {
				l.acked("c1")
			}
			if got := l.expired(t0.Add(c.checkAt)); !slices.Equal(got, c.want) {
				t.Fatalf("expired = %v, want %v", got, c.want)
			}
			if got := l.expired(t0.Add(c.checkAt + time.Hour)); c.want != nil && got != nil {
				t.Errorf("expired twice: %v", got)
			}
			if c.want != nil || !c.answer || c.acked {
				if n := l.halfOpen.Load(); n != 0 || src.halfOpen.Load() != 0 {
					t.Errorf("half-open left: global %d, source %d", n, src.halfOpen.Load())
				}
			}
			l.freePorts("c1")
			if n := src.ports.Load(); n != 0 {
				t.Errorf("source still holds %d ports", n)
			}
			if n := len(l.callShard("c1").m); n != 0 {
				t.Errorf("call records left: %d", n)
			}
		})
	}
}

func TestLimiter_SourceTableBounded(t *testing.T) {
	l := newLimiter(LimitOptions{SourceRate: 10, SourceBurst: 10, SourceHalfOpen: 1})
	busy, _ := l.check(srcA, false, true, false, t0, globalUse{})
	l.begin("held", busy)
	for i := range maxSources + 5000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.check(a, false, false, true, t0, globalUse{})
	}
	if n := l.nsources.Load(); n > maxSources || n < maxSources/2 {
		t.Fatalf("table holds %d sources after %d distinct, want at most %d", n, maxSources+5000, maxSources)
	}
	// The source holding a call survived the evictions: its cap still holds.
	if _, why := l.check(srcA, false, true, false, t0, globalUse{}); why != limitSourceHalfOpen {
		t.Errorf("busy source lost its state: %q", why)
	}
	if left := l.sweep(t0.Add(sourceIdle - time.Second)); left == 0 {
		t.Errorf("sweep forgot sources seen within %v", sourceIdle)
	}
	if left := l.sweep(t0.Add(sourceIdle + time.Second)); left != 1 {
		t.Errorf("after sweep %d sources left, want only the one holding a call", left)
	}
}

func TestLimiter_ReconcileFreesPortsOfVanishedMedia(t *testing.T) {
	l := newLimiter(LimitOptions{SourceRate: 10, SourceBurst: 10, SourcePorts: 4})
	src, _ := l.check(srcA, false, true, false, t0, globalUse{})
	l.begin("c1", src)
	l.chargePorts("c1", 4)
	l.acked("c1")
	l.reconcile(func(string) bool { return true })
	if src.ports.Load() != 4 {
		t.Fatalf("reconcile freed the ports of live media")
	}
	l.reconcile(func(string) bool { return false })
	if src.ports.Load() != 0 {
		t.Fatalf("ports of vanished media still charged: %d", src.ports.Load())
	}
}

func TestFloodFilter_DropsInviteDatagramsAboveHardRate(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := &Proxy{opts: Options{Limits: LimitOptions{SourceRate: 1, SourceBurst: 1, SourceDropRate: 2},
		Trust: func(src netip.AddrPort) (string, bool) { return "", src.Addr() == srcB }}, log: testLogger(t)}
	if err := p.initLimits(reg); err != nil {
		t.Fatal(err)
	}
	inv := []byte("INVITE sip:c@x SIP/2.0\r\n\r\n")
	bye := []byte("BYE sip:c@x SIP/2.0\r\n\r\n")
	props := func(a netip.Addr) sip.TransportReadProps {
		return sip.TransportReadProps{Transport: "UDP", RemoteAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 5060))}
	}
	f := p.floodFilter
	var passed []string
	for i, c := range []struct {
		src  netip.Addr
		data []byte
	}{{srcA, inv}, {srcA, inv}, {srcA, inv}, {srcA, bye}, {srcB, inv}, {srcB, inv}, {srcB, inv}} {
		out, err := f(props(c.src), c.data)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) > 0 {
			passed = append(passed, fmt.Sprintf("%d", i))
		}
	}
	if got := strings.Join(passed, ","); got != "0,1,3,4,5,6" {
		t.Errorf("datagrams passed %s, want 0,1,3,4,5,6 (third INVITE of A dropped; BYE and the exempt source pass)", got)
	}
	if got := testutil.ToFloat64(p.limitMetrics.limited[limitSourceDrop]); got != 1 {
		t.Errorf("source_drop counted %v, want 1", got)
	}
}

// startLimitedProxy is startProxy with flood limits.
func startLimitedProxy(t *testing.T, adm Admitter, lo LimitOptions) *Proxy {
	t.Helper()
	px, err := New(Options{Listen: "127.0.0.1:0", RouteSecret: "test-secret", UserAgent: "sipedge-test", Limits: lo},
		adm, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	serve(t, px)
	return px
}

func TestLimitNewDialog_503WithRetryAfterAboveSourceRate(t *testing.T) {
	node := newPeer(t)
	px := startLimitedProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr(), Transport: "udp"}},
		LimitOptions{SourceRate: 1, SourceBurst: 1, SourceDropRate: 100, RetryAfter: 7})
	caller := newPeer(t)
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "lim-1", "z9hG4bK-l1", 70))
	node.recv("INVITE ")
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "lim-2", "z9hG4bK-l2", 70))
	res := caller.recv("SIP/2.0 503")
	if !strings.Contains(res, "lim-2") || !strings.Contains(res, "source_rate") {
		t.Fatalf("503 not for the second INVITE or without reason:\n%s", res)
	}
	if ra := header(res, "Retry-After"); len(ra) != 1 || ra[0] != "7" {
		t.Errorf("Retry-After = %q, want 7", ra)
	}
	if got := testutil.ToFloat64(px.limitMetrics.limited[limitSourceRate]); got != 1 {
		t.Errorf("source_rate counted %v, want 1", got)
	}
}

func TestTimerH_NodeGetsByeWhenTheCallerNeverACKs(t *testing.T) {
	node := newPeer(t)
	px := startLimitedProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr(), Transport: "udp"}},
		LimitOptions{AckTimeout: 300 * time.Millisecond})
	caller := newPeer(t)
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "noack-1", "z9hG4bK-n1", 70))
	inv := node.recv("INVITE ")
	node.send(px.Addr(), answer(inv, 200, "OK", "node1", node.addr()))
	caller.recv("SIP/2.0 200")
	// No ACK: after Timer H sipedge ends the call toward the node.
	bye := node.recv("BYE ")
	if !strings.Contains(bye, "noack-1") || !strings.Contains(bye, `text="ACK timeout"`) {
		t.Fatalf("BYE to the node not for the unACKed call or without reason:\n%s", bye)
	}
	if got := testutil.ToFloat64(px.limitMetrics.ackTimeouts); got != 1 {
		t.Errorf("ack timeouts counted %v, want 1", got)
	}
	if n := px.ActiveDialogs(); n != 0 {
		t.Errorf("%d dialogs still held", n)
	}
}

func TestTimerH_ACKedCallIsNotEnded(t *testing.T) {
	node := newPeer(t)
	px := startLimitedProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr(), Transport: "udp"}},
		LimitOptions{AckTimeout: 300 * time.Millisecond})
	caller := newPeer(t)
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "acked-1", "z9hG4bK-a1", 70))
	inv := node.recv("INVITE ")
	node.send(px.Addr(), answer(inv, 200, "OK", "node1", node.addr()))
	ok := caller.recv("SIP/2.0 200")
	route := header(ok, "Record-Route")[0]
	caller.send(px.Addr(), fmt.Sprintf("ACK sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-ack1;rport\r\n"+
		"Route: %s\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=caller1\r\n"+
		"To: <sip:conf1@example.com>;tag=node1\r\nCall-ID: acked-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
		node.addr(), caller.addr(), route))
	node.recv("ACK ")
	time.Sleep(time.Second)
	if got := testutil.ToFloat64(px.limitMetrics.ackTimeouts); got != 0 {
		t.Errorf("ACKed call ended by Timer H (%v)", got)
	}
	if n := px.ActiveDialogs(); n != 1 {
		t.Errorf("%d dialogs held, want the ACKed one", n)
	}
}

// Calls from many goroutines, ending every way a call ends, leave no
// half-open count, no charged port and no record behind.
func TestLimiter_ConcurrentCallsLeaveNothing(t *testing.T) {
	l := newLimiter(LimitOptions{SourceRate: 1e6, SourceBurst: 1e6, SourceHalfOpen: 1e6, SourcePorts: 1e6})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := netip.AddrFrom4([4]byte{10, 0, 0, byte(g % 3)})
			for i := range 2000 {
				id := fmt.Sprintf("g%d-%d", g, i)
				s, why := l.check(src, false, true, false, t0, globalUse{})
				if why != limitNone {
					t.Errorf("refused: %v", why)
					return
				}
				l.begin(id, s)
				l.chargePorts(id, 4)
				switch i % 3 {
				case 0: // refused by the node: ports freed, then the transaction ends
					l.freePorts(id)
					l.settle(id, false, t0)
				case 1: // answered and ACKed, later hung up
					l.settle(id, true, t0)
					l.acked(id)
					l.freePorts(id)
				case 2: // answered, never ACKed: Timer H, then media freed
					l.settle(id, true, t0)
				}
			}
		}()
	}
	wg.Wait()
	for _, id := range l.expired(t0.Add(sip.Timer_H)) {
		l.freePorts(id)
	}
	if n := l.halfOpen.Load(); n != 0 {
		t.Errorf("half-open left: %d", n)
	}
	for i := range l.calls {
		if n := len(l.calls[i].m); n != 0 {
			t.Fatalf("shard %d keeps %d records", i, n)
		}
	}
	for i := range l.sources {
		for a, s := range l.sources[i].m {
			if s.halfOpen.Load() != 0 || s.ports.Load() != 0 {
				t.Errorf("source %v: %d half-open, %d ports", a, s.halfOpen.Load(), s.ports.Load())
			}
		}
	}
}
