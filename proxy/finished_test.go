package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"

	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/ring"
)

// fakeClock is an injected clock for the finished table.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestFinishedTable_ExpiresAfterTTL(t *testing.T) {
	clk := newFakeClock()
	tab := newFinishedTable(32*time.Second, 0, clk.now)
	tab.put("k1", finishedEntry{data: "one"})
	cases := []struct {
		after time.Duration
		found bool
	}{
		{0, true},
		{31 * time.Second, true},
		{time.Second, false}, // 32 s after put: Timer J has fired
	}
	for _, c := range cases {
		clk.advance(c.after)
		e, ok := tab.get([]byte("k1"))
		if ok != c.found || (ok && e.data != "one") {
			t.Fatalf("after +%v: found %v (%q), want %v", c.after, ok, e.data, c.found)
		}
	}
	if n := tab.len(); n != 1 {
		t.Fatalf("before the sweep: %d entries, want 1 (expired, not yet dropped)", n)
	}
	tab.expireAll()
	if n := tab.len(); n != 0 {
		t.Fatalf("after the sweep: %d entries, want 0", n)
	}
}

func TestFinishedTable_PutAgainKeepsTheNewerEntry(t *testing.T) {
	clk := newFakeClock()
	tab := newFinishedTable(32*time.Second, 0, clk.now)
	tab.put("k", finishedEntry{data: "old"})
	clk.advance(20 * time.Second)
	tab.put("k", finishedEntry{data: "new"})
	clk.advance(20 * time.Second) // the first put has expired, the second has not
	tab.expireAll()
	e, ok := tab.getString("k")
	if !ok || e.data != "new" {
		t.Fatalf("got %q, %v; want the newer entry", e.data, ok)
	}
	clk.advance(12 * time.Second)
	if _, ok := tab.getString("k"); ok {
		t.Fatal("the newer entry outlived its ttl")
	}
}

func TestFinishedTable_BoundedEvictsOldest(t *testing.T) {
	clk := newFakeClock()
	evicted := 0
	tab := newFinishedTable(32*time.Second, finishedShards*4, clk.now) // 4 per shard
	tab.onEvict = func() { evicted++ }
	const n = 1000
	for i := 0; i < n; i++ {
		tab.put("key-"+strconv.Itoa(i), finishedEntry{})
		clk.advance(time.Millisecond)
	}
	if got := tab.len(); got > finishedShards*4 {
		t.Fatalf("%d entries held, bound is %d", got, finishedShards*4)
	}
	if evicted != n-tab.len() {
		t.Fatalf("evicted %d, want %d", evicted, n-tab.len())
	}
	if _, ok := tab.getString("key-" + strconv.Itoa(n-1)); !ok {
		t.Fatal("the newest entry was evicted")
	}
}

func TestFinishedTable_QueueDoesNotGrowForEver(t *testing.T) {
	clk := newFakeClock()
	tab := newFinishedTable(time.Second, 0, clk.now)
	for i := 0; i < 200000; i++ {
		tab.put("key-"+strconv.Itoa(i), finishedEntry{})
		clk.advance(100 * time.Microsecond) // 10 000 live at a time
	}
	total := 0
	for i := range tab.shards {
		total += tab.shards[i].chunks * len(queueChunk{}.items)
	}
	if total > 10000+2*finishedShards*len(queueChunk{}.items) {
		t.Fatalf("queues hold %d slots for about 10 000 live entries", total)
	}
}

// The scan must give sipgo's own server transaction key, or nothing.
func TestScanServerKey_MatchesSipgo(t *testing.T) {
	msg := func(first, via, cseq string) string {
		return first + "\r\n" + via + "\r\nFrom: <sip:a@example.com>;tag=f1\r\nTo: <sip:b@example.com>\r\n" +
			"Call-ID: c1@example.com\r\n" + cseq + "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	}
	cases := []struct {
		name string
		data string
		as   string
		ok   bool
	}{
		{"BYE", msg("BYE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bK-1", "CSeq: 2 BYE"), "", true},
		{"INVITE no port", msg("INVITE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc", "CSeq: 1 INVITE"), "", true},
		{"compact via, lower case names", msg("BYE sip:x@10.0.0.9 SIP/2.0", "v: SIP/2.0/UDP host.example.com:5060;branch=z9hG4bKq", "cseq: 7 BYE"), "", true},
		{"two values in one Via", msg("BYE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKtop, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKlow", "CSeq: 3 BYE"), "", true},
		{"IPv6 sent-by", msg("BYE sip:x@[::1] SIP/2.0", "Via: SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK6", "CSeq: 3 BYE"), "", true},
		{"IPv6 no port", msg("BYE sip:x@[::1] SIP/2.0", "Via: SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK6;rport", "CSeq: 3 BYE"), "", true},
		{"TLS default port", msg("BYE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/TLS 10.0.0.1;branch=z9hG4bKt", "CSeq: 3 BYE"), "", true},
		{"spaces around CSeq", msg("OPTIONS sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKo", "CSeq:   9 OPTIONS  "), "", true},
		{"ACK matches INVITE", msg("ACK sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa", "CSeq: 1 ACK"), "", true},
		{"CANCEL as INVITE", msg("CANCEL sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc", "CSeq: 1 CANCEL"), "INVITE", true},
		{"blank after a semicolon", msg("BYE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060; branch=z9hG4bKsp", "CSeq: 3 BYE"), "", true},
		{"branch before other params", msg("BYE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKb;received=10.0.0.1", "CSeq: 3 BYE"), "", true},

		{"no cookie", msg("BYE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=abc123", "CSeq: 2 BYE"), "", false},
		{"blank inside the branch", msg("BYE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKb ;x=y", "CSeq: 2 BYE"), "", false},
		{"cookie only", msg("BYE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK", "CSeq: 2 BYE"), "", false},
		{"no branch", msg("BYE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060", "CSeq: 2 BYE"), "", false},
		{"space before the port", msg("BYE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1 :5060;branch=z9hG4bKs", "CSeq: 2 BYE"), "", false},
		{"response", "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKr\r\nCSeq: 2 BYE\r\n\r\n", "", false},
		{"folded Via", msg("BYE sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP\r\n 10.0.0.1:5060;branch=z9hG4bKf", "CSeq: 2 BYE"), "", false},
		{"two blanks in CSeq", msg("OPTIONS sip:x@10.0.0.9 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKo", "CSeq: 9  OPTIONS"), "", false},
		{"no CSeq", "BYE sip:x@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKn\r\n\r\n", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := scanServerKey([]byte(c.data), nil, c.as)
			if ok != c.ok {
				t.Fatalf("ok = %v, want %v (key %q)", ok, c.ok, got.key)
			}
			if !ok {
				return
			}
			m, err := newParser().ParseSIP([]byte(c.data))
			if err != nil {
				t.Fatalf("sipgo cannot parse the case: %v", err)
			}
			req := m.(*sip.Request)
			if c.as != "" {
				// sipgo matches a CANCEL to its INVITE with the INVITE's key.
				req.CSeq().MethodName = sip.RequestMethod(c.as)
			}
			want, err := sip.ServerTxKeyMake(req)
			if err != nil {
				t.Fatal(err)
			}
			if string(got.key) != want {
				t.Fatalf("key %q, sipgo's %q", got.key, want)
			}
			if string(got.method) != string(req.Method) {
				t.Fatalf("method %q, want %q", got.method, req.Method)
			}
		})
	}
}

func TestAbsorb_MissAllocatesNothing(t *testing.T) {
	r := newCallRig(t, false)
	data := appendRequest(nil, "BYE", r.ruri, r.caller.addr(), 1, 2, []byte("<sip:x@127.0.0.1;lr>"))
	info := sip.TransportReadProps{Transport: "UDP", RemoteAddr: r.caller.conn.LocalAddr()}
	if n := testing.AllocsPerRun(200, func() { r.px.absorb(info, data) }); n != 0 {
		t.Fatalf("a lookup that misses allocates %v times", n)
	}
}

// newCallRigBefore is newCallRig (not rejecting) with before applied to
// the proxy before it serves.
func newCallRigBefore(tb testing.TB, before func(*Proxy)) *callRig {
	tb.Helper()
	r := &callRig{caller: newRawPeer(tb), node: newRawPeer(tb)}
	adm := &benchAdmitter{node: ring.Node{Name: "n1", Addr: r.node.addr(), Transport: "udp"}}
	px, err := New(Options{Listen: "127.0.0.1:0", RouteSecret: "bench-secret", UserAgent: "sipedge-bench",
		Instance: "edge-a", FailoverAttempts: DefaultFailoverAttempts}, adm, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	before(px)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = px.Serve(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	r.px = px
	r.pxAddr, _ = net.ResolveUDPAddr("udp", px.Addr())
	r.ruri = "sip:conf1@" + px.Addr()
	return r
}

// expectNothing fails if a datagram starting with prefix arrives within d.
func (p *rawPeer) expectNothing(prefix string, d time.Duration) {
	p.tb.Helper()
	deadline := time.Now().Add(d)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		n, _, err := p.conn.ReadFromUDP(p.in)
		if err != nil {
			return
		}
		if bytes.HasPrefix(p.in[:n], []byte(prefix)) {
			p.tb.Fatalf("unexpected %q:\n%s", prefix, p.in[:n])
		}
	}
}

// callUp sets up call n and returns its route (for in-dialog requests).
func (r *callRig) callUp(n int) []byte {
	r.setUp(n, true)
	route := r.routes[len(r.routes)-1]
	r.routes = r.routes[:0]
	return route
}

func TestFinished_RetransmittedByeGetsIdenticalResponseAndIsNotForwarded(t *testing.T) {
	r := newCallRig(t, false)
	route := r.callUp(1)
	c, nd := r.caller, r.node
	bye := appendRequest(nil, "BYE", r.ruri, c.addr(), 1, 2, route)
	c.send(r.pxAddr, bye)
	fwd := nd.recv("BYE ")
	nd.out = appendAnswer(nd.out[:0], fwd, "200 OK", "", nd.addr())
	nd.send(r.pxAddr, nd.out)
	first := append([]byte(nil), c.recv("SIP/2.0 200")...)
	for i := 0; i < 3; i++ {
		c.send(r.pxAddr, bye)
		again := c.recv("SIP/2.0 ")
		if !bytes.Equal(again, first) {
			t.Fatalf("retransmission %d answered\n%s\nfirst answer was\n%s", i+1, again, first)
		}
	}
	nd.expectNothing("BYE ", 300*time.Millisecond)
	if got := counterSoon(r.px.fin.m.resent, 3); got != 3 {
		t.Fatalf("resent counted %v, want 3", got)
	}
}

func TestFinished_RetransmittedInviteAfter2xxIsNotForwarded(t *testing.T) {
	r := newCallRig(t, false)
	c, nd := r.caller, r.node
	inv := appendRequest(nil, "INVITE", r.ruri, c.addr(), 2, 1, nil)
	c.send(r.pxAddr, inv)
	fwd := nd.recv("INVITE ")
	nd.out = appendAnswer(nd.out[:0], fwd, "200 OK", "node-2", nd.addr())
	nd.send(r.pxAddr, nd.out)
	c.recv("SIP/2.0 200")
	c.send(r.pxAddr, inv) // the caller did not see the 2xx in time
	c.send(r.pxAddr, inv)
	nd.expectNothing("INVITE ", 300*time.Millisecond)
	if got := counterSoon(r.px.fin.m.inviteDropped, 2); got != 2 {
		t.Fatalf("dropped counted %v, want 2", got)
	}
	// A CANCEL that crossed the 2xx gets 200 and goes nowhere.
	cancel := bytes.Replace(inv, []byte("INVITE sip:"), []byte("CANCEL sip:"), 1)
	cancel = bytes.Replace(cancel, []byte("CSeq: 1 INVITE"), []byte("CSeq: 1 CANCEL"), 1)
	c.send(r.pxAddr, cancel)
	if ok := c.recv("SIP/2.0 "); !bytes.HasPrefix(ok, []byte("SIP/2.0 200")) || !bytes.Contains(ok, []byte("CANCEL")) {
		t.Fatalf("late CANCEL answered\n%s", ok)
	}
	nd.expectNothing("CANCEL ", 200*time.Millisecond)
}

func TestFinished_Node2xxRetransmissionRelayedAfterClientTxEnded(t *testing.T) {
	r := newCallRig(t, false)
	c, nd := r.caller, r.node
	c.send(r.pxAddr, appendRequest(nil, "INVITE", r.ruri, c.addr(), 3, 1, nil))
	fwd := nd.recv("INVITE ")
	ok200 := appendAnswer(nil, fwd, "200 OK", "node-3", nd.addr())
	nd.send(r.pxAddr, ok200)
	first := append([]byte(nil), c.recv("SIP/2.0 200")...)
	if r.px.fin.client.len() != 1 {
		t.Fatalf("client table holds %d branches, want 1", r.px.fin.client.len())
	}
	nd.send(r.pxAddr, ok200) // no ACK yet: the node retransmits
	again := c.recv("SIP/2.0 200")
	if v := headerLine(again, "Via:"); !bytes.Contains(v, []byte(c.addr())) {
		t.Fatalf("relayed 2xx has top %s, want the caller's Via", v)
	}
	if !bytes.Equal(headerLine(again, "Call-ID:"), headerLine(first, "Call-ID:")) {
		t.Fatalf("relayed\n%s\nfirst\n%s", again, first)
	}
	if got := counterSoon(r.px.fin.m.relayed, 1); got != 1 {
		t.Fatalf("relayed counted %v, want 1", got)
	}
}

func TestFinished_Forged2xxIsNotRelayed(t *testing.T) {
	r := newCallRig(t, false)
	r.callUp(4)
	c, nd := r.caller, r.node
	ourVia := "Via: SIP/2.0/UDP " + r.px.Addr() + ";branch=z9hG4bK-forged-1\r\n"
	callerVia := "Via: SIP/2.0/UDP " + c.addr() + ";rport;branch=z9hG4bK-INVITE4\r\n"
	knownVia := "Via: SIP/2.0/UDP " + r.px.Addr() + ";branch=" + firstBranch(t, r) + "\r\n"
	rest := "From: <sip:alice@example.com>;tag=caller-4\r\nTo: <sip:conf1@example.com>;tag=x\r\n" +
		"Call-ID: bench-4@example.com\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
	cases := []struct {
		name   string
		msg    string
		reason unmatchedReason
	}{
		{"our Via, unknown branch", "SIP/2.0 200 OK\r\n" + ourVia + callerVia + rest, unmatchedUnknown},
		{"foreign top Via", "SIP/2.0 200 OK\r\n" + callerVia + rest, unmatchedNotOurs},
		{"not a 2xx", "SIP/2.0 486 Busy Here\r\n" + ourVia + callerVia + rest, unmatchedNot2xx},
		{"known branch, another Call-ID", "SIP/2.0 200 OK\r\n" + knownVia + callerVia +
			strings.Replace(rest, "bench-4@", "other-4@", 1), unmatchedUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(r.px.fin.m.unmatched[tc.reason])
			nd.send(r.pxAddr, []byte(tc.msg))
			c.expectNothing("SIP/2.0", 300*time.Millisecond)
			if got := testutil.ToFloat64(r.px.fin.m.unmatched[tc.reason]) - before; got != 1 {
				t.Fatalf("%s counted %v, want 1", unmatchedNames[tc.reason], got)
			}
		})
	}
	if got := counterSoon(r.px.fin.m.relayed, 0); got != 0 {
		t.Fatalf("relayed %v forged responses", got)
	}
}

func TestFinished_ExpiredEntryGoesBackToSipgo(t *testing.T) {
	clk := newFakeClock()
	r := newCallRigBefore(t, func(px *Proxy) { px.fin.server.now = clk.now })
	route := r.callUp(5)
	c, nd := r.caller, r.node
	bye := appendRequest(nil, "BYE", r.ruri, c.addr(), 5, 2, route)
	c.send(r.pxAddr, bye)
	nd.out = appendAnswer(nd.out[:0], nd.recv("BYE "), "200 OK", "", nd.addr())
	nd.send(r.pxAddr, nd.out)
	c.recv("SIP/2.0 200")
	clk.advance(31 * time.Second)
	c.send(r.pxAddr, bye)
	c.recv("SIP/2.0 200")
	nd.expectNothing("BYE ", 200*time.Millisecond)
	clk.advance(time.Second) // 32 s: Timer J would have fired, the BYE is new to sipgo
	c.send(r.pxAddr, bye)
	nd.recv("BYE ")
}

func TestFinished_NonCookieBranchKeepsSipgoPath(t *testing.T) {
	r := newCallRig(t, false)
	route := r.callUp(6)
	c, nd := r.caller, r.node
	bye := appendRequest(nil, "BYE", r.ruri, c.addr(), 6, 2, route)
	bye = bytes.Replace(bye, []byte("branch=z9hG4bK-BYE6"), []byte("branch=rfc2543-6"), 1)
	if !bytes.Contains(bye, []byte("branch=rfc2543-6")) {
		t.Fatal("test BYE not rewritten")
	}
	c.send(r.pxAddr, bye)
	nd.out = appendAnswer(nd.out[:0], nd.recv("BYE "), "200 OK", "", nd.addr())
	nd.send(r.pxAddr, nd.out)
	c.recv("SIP/2.0 200")
	if n := r.px.fin.server.len(); n != 1 { // the INVITE's key; not the BYE
		t.Fatalf("server table holds %d keys, want 1 (the INVITE's)", n)
	}
	c.send(r.pxAddr, bye)
	c.recv("SIP/2.0 200") // sipgo's transaction absorbs it
	nd.expectNothing("BYE ", 200*time.Millisecond)
	if got := counterSoon(r.px.fin.m.resent, 0); got != 0 {
		t.Fatalf("the table answered a non-cookie branch (%v)", got)
	}
}

// TestFinished_TableEntriesPerCall checks what a finished call leaves:
// the INVITE's and BYE's server keys, the INVITE's client branch.
func TestFinished_TableEntriesPerCall(t *testing.T) {
	r := newCallRig(t, false)
	route := r.callUp(7)
	r.hangUp(7, route)
	if s, cl := r.px.fin.server.len(), r.px.fin.client.len(); s != 2 || cl != 1 {
		t.Fatalf("server %d, client %d entries; want 2 and 1", s, cl)
	}
	e, ok := r.px.fin.client.getString(firstBranch(t, r))
	if !ok || e.sum != r.px.fin.client.callSum("bench-7@example.com") || e.data != "" || !e.flag {
		t.Fatalf("client entry %+v, %v", e, ok)
	}
}

// firstBranch is the only branch in the client table.
func firstBranch(t *testing.T, r *callRig) string {
	t.Helper()
	for i := range r.px.fin.client.shards {
		s := &r.px.fin.client.shards[i]
		s.mu.Lock()
		for _, rec := range s.m {
			k := string(s.key(rec))
			s.mu.Unlock()
			if !strings.HasPrefix(k, rfc3261Cookie) {
				t.Fatalf("client key %q without the cookie", k)
			}
			return k
		}
		s.mu.Unlock()
	}
	t.Fatal("no client entry")
	return ""
}

func TestFinished_RetransmittedUnmatchedCancelGetsSame481(t *testing.T) {
	r := newCallRig(t, false)
	c, nd := r.caller, r.node
	cancel := appendRequest(nil, "INVITE", r.ruri, c.addr(), 8, 1, nil)
	cancel = bytes.Replace(cancel, []byte("INVITE sip:"), []byte("CANCEL sip:"), 1)
	cancel = bytes.Replace(cancel, []byte("CSeq: 1 INVITE"), []byte("CSeq: 1 CANCEL"), 1)
	c.send(r.pxAddr, cancel)
	first := append([]byte(nil), c.recv("SIP/2.0 ")...)
	if !bytes.HasPrefix(first, []byte("SIP/2.0 481")) {
		t.Fatalf("a CANCEL of no INVITE answered\n%s", first)
	}
	c.send(r.pxAddr, cancel)
	if again := c.recv("SIP/2.0 "); !bytes.Equal(again, first) {
		t.Fatalf("retransmitted CANCEL answered\n%s\nfirst\n%s", again, first)
	}
	if got := counterSoon(r.px.fin.m.resent, 1); got != 1 {
		t.Fatalf("resent counted %v, want 1", got)
	}
	nd.expectNothing("CANCEL ", 200*time.Millisecond)
}

// fakeStream is a reliable connection (TCP, TLS, WS) that records writes.
type fakeStream struct {
	mu     sync.Mutex
	writes int
}

func (c *fakeStream) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060}
}
func (c *fakeStream) WriteMsg(sip.Message) error {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return nil
}
func (c *fakeStream) Ref(int) int            { return 1 }
func (c *fakeStream) TryClose() (int, error) { return 0, nil }
func (c *fakeStream) Close() error           { return nil }
func (c *fakeStream) written() int           { c.mu.Lock(); defer c.mu.Unlock(); return c.writes }

// Which final answers end sipgo's server transaction at once, over which
// transport, and what the finished table keeps of them.
func TestRespondTx_WhatEndsTheServerTransaction(t *testing.T) {
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	sock, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cases := []struct {
		name      string
		method    string
		transport string
		branch    string
		code      int
		released  bool // the transaction ended by respondTx
		entry     bool // a server entry kept
		bytes     bool // ... with the response's bytes
	}{
		{"BYE 200 over UDP", "BYE", "UDP", "z9hG4bK-b1", 200, true, true, true},
		{"BYE 404 over UDP", "BYE", "UDP", "z9hG4bK-b2", 404, true, true, true},
		{"INVITE 200 over UDP", "INVITE", "UDP", "z9hG4bK-i1", 200, true, true, false},
		{"INVITE 486 over UDP: Completed, waits for the ACK", "INVITE", "UDP", "z9hG4bK-i2", 486, false, false, false},
		{"INVITE 200 over TCP: nothing kept", "INVITE", "TCP", "z9hG4bK-i3", 200, true, false, false},
		{"BYE 200 over TCP: sipgo ends it (Timer J is 0)", "BYE", "TCP", "z9hG4bK-b3", 200, false, false, false},
		{"BYE 200 over UDP, RFC 2543 branch", "BYE", "UDP", "rfc2543-b4", 200, false, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := &Proxy{}
			if err := p.initFinished(prometheus.NewRegistry()); err != nil {
				t.Fatal(err)
			}
			raw := c.method + " sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/" + c.transport + " " + peer.LocalAddr().String() +
				";branch=" + c.branch + "\r\nFrom: <sip:a@example.com>;tag=f\r\nTo: <sip:x@example.com>\r\n" +
				"Call-ID: rt-" + c.branch + "\r\nCSeq: 1 " + c.method + "\r\nContent-Length: 0\r\n\r\n"
			m, err := newParser().ParseSIP([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			req := m.(*sip.Request)
			req.SetTransport(c.transport)
			req.SetSource(peer.LocalAddr().String())
			var conn sip.Connection = &sip.UDPConnection{PacketConn: sock}
			stream := &fakeStream{}
			if c.transport != "UDP" {
				conn = stream
			}
			key, err := sip.ServerTxKeyMake(req)
			if err != nil {
				t.Fatal(err)
			}
			tx := sip.NewServerTx(key, req, conn, logger)
			if err := tx.Init(); err != nil {
				t.Fatal(err)
			}
			defer tx.Terminate()
			res := sip.NewResponseFromRequest(req, c.code, "Reason", nil)
			released, err := p.respondTx(tx, res)
			if err != nil {
				t.Fatal(err)
			}
			ended := false
			select {
			case <-tx.Done():
				ended = true
			default:
			}
			sipgoEnds := c.transport != "UDP" && !c.released // Timer J of 0: sipgo ends it on its own at once
			if released != c.released || (ended != c.released && !sipgoEnds) {
				t.Fatalf("released %v, transaction ended %v; want %v", released, ended, c.released)
			}
			e, found := p.fin.server.getString(key)
			if found != c.entry || (found && (e.data != "") != c.bytes) {
				t.Fatalf("entry %v (data %d bytes); want entry %v, bytes %v", found, len(e.data), c.entry, c.bytes)
			}
			if c.transport == "UDP" {
				_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 4096)
				n, _, err := peer.ReadFromUDP(buf)
				if err != nil {
					t.Fatalf("no response sent: %v", err)
				}
				if c.bytes {
					if _, stored, _ := decodeDest(e.data); !bytes.Equal(stored, buf[:n]) {
						t.Fatalf("stored\n%s\nsent\n%s", stored, buf[:n])
					}
				}
			} else if stream.written() != 1 {
				t.Fatalf("%d writes on the stream, want 1", stream.written())
			}
		})
	}
}

// A request whose top Via the scan cannot read (sipgo reads it its own
// way) keeps sipgo's transaction: its retransmission is absorbed there,
// never taken for a new call.
func TestFinished_UnreadableViaKeepsSipgoPath(t *testing.T) {
	r := newCallRig(t, false)
	c, nd := r.caller, r.node
	inv := appendRequest(nil, "INVITE", r.ruri, c.addr(), 9, 1, nil)
	// A blank after the branch: sipgo keeps it in the branch, the scan gives up.
	inv = bytes.Replace(inv, []byte("branch=z9hG4bK-INVITE9\r\n"), []byte("branch=z9hG4bK-INVITE9 ;x=y\r\n"), 1)
	if _, ok := scanServerKey(inv, nil, ""); ok {
		t.Fatal("the scan reads the test INVITE: it tests nothing")
	}
	c.send(r.pxAddr, inv)
	nd.out = appendAnswer(nd.out[:0], nd.recv("INVITE "), "200 OK", "node-9", nd.addr())
	nd.send(r.pxAddr, nd.out)
	c.recv("SIP/2.0 200")
	if n := r.px.fin.server.len(); n != 0 {
		t.Fatalf("server table holds %d keys, want none", n)
	}
	c.send(r.pxAddr, inv)
	nd.expectNothing("INVITE ", 300*time.Millisecond)
}

// counterSoon reads c, waiting up to a second for it to reach want: the
// proxy counts a message right after sending it, so the peer may see the
// message first.
func counterSoon(c prometheus.Counter, want float64) float64 {
	deadline := time.Now().Add(time.Second)
	for {
		got := testutil.ToFloat64(c)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}
