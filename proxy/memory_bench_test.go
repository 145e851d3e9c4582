package proxy

import (
	"bytes"
	"context"
	"net"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/ring"
)

// The benchmarks in this file drive whole calls through a real Proxy on
// loopback (its sipgo server, client and transaction layers, the default
// failover plan) from raw UDP peers, so allocs/op is everything the
// process allocates for one set-up, one in-dialog request or one reject,
// the peers' few buffers included. Run them with a fixed count, e.g.
//
//	go test -run '^$' -bench 'Call|Reject|Held' -benchmem -benchtime 3000x ./proxy/

// benchAdmitter admits every call to one node (or rejects every call with
// 503 when node is empty); it answers failover questions so the proxy
// keeps its production path (a retry plan per new INVITE).
type benchAdmitter struct {
	node     ring.Node
	stateful bool // never answer statelessly (Rejecting false): the path before stateless.go
}

func (a *benchAdmitter) Admit(context.Context, admission.Request) admission.Verdict {
	if a.node.Addr == "" {
		return admission.Verdict{Code: 503, Reason: admission.ReasonNoNode, RetryAfter: 7}
	}
	return admission.Verdict{Admit: true, Node: a.node, Placement: admission.PlacementRing}
}
func (a *benchAdmitter) Failover(context.Context, admission.Request, string, []string) admission.Verdict {
	return admission.Verdict{Code: 503}
}
func (a *benchAdmitter) Rejecting() bool { return !a.stateful && a.node.Addr == "" }
func (a *benchAdmitter) Immediate(req admission.Request) (admission.Verdict, bool) {
	if a.node.Addr != "" {
		return admission.Verdict{}, false
	}
	return a.Admit(context.Background(), req), true
}
func (a *benchAdmitter) Rejected(admission.Request, admission.Verdict) {}
func (a *benchAdmitter) Healthy(string) bool                           { return true }
func (a *benchAdmitter) DialogStarted(string, string)                  {}
func (a *benchAdmitter) DialogEnded(string, string)                    {}
func (a *benchAdmitter) DialogEndedElsewhere(context.Context, string, string, string, string, string) {
}

// rawPeer is a UDP SIP endpoint that builds and reads messages in reused
// buffers, so it adds almost nothing to the proxy's allocations.
type rawPeer struct {
	tb   testing.TB
	conn *net.UDPConn
	host string
	in   []byte
	out  []byte
}

func newRawPeer(tb testing.TB) *rawPeer {
	tb.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &rawPeer{tb: tb, conn: c, host: c.LocalAddr().String(), in: make([]byte, 65535), out: make([]byte, 0, 4096)}
}

func (p *rawPeer) addr() string { return p.host }

func (p *rawPeer) send(to *net.UDPAddr, msg []byte) {
	if _, err := p.conn.WriteToUDP(msg, to); err != nil {
		p.tb.Fatal(err)
	}
}

// recv returns the next datagram starting with prefix (skipping 100
// Trying and retransmissions); the slice is valid until the next recv.
func (p *rawPeer) recv(prefix string) []byte {
	deadline := time.Now().Add(5 * time.Second)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		n, _, err := p.conn.ReadFromUDP(p.in)
		if err != nil {
			p.tb.Fatalf("waiting for %q: %v", prefix, err)
		}
		if bytes.HasPrefix(p.in[:n], []byte(prefix)) {
			return p.in[:n]
		}
	}
}

// headerLine returns the first header line of msg named name ("Via:").
func headerLine(msg []byte, name string) []byte {
	for len(msg) > 0 {
		i := bytes.Index(msg, []byte("\r\n"))
		if i <= 0 {
			return nil
		}
		line := msg[:i]
		if len(line) > len(name) && bytes.EqualFold(line[:len(name)], []byte(name)) {
			return line
		}
		msg = msg[i+2:]
	}
	return nil
}

// appendAnswer is a UAS's response to req: Via, Record-Route, From,
// Call-ID, CSeq and To copied, a To tag added.
func appendAnswer(dst, req []byte, status, toTag, contact string) []byte {
	dst = append(dst, "SIP/2.0 "...)
	dst = append(dst, status...)
	dst = append(dst, "\r\n"...)
	head := req
	if i := bytes.Index(req, []byte("\r\n")); i >= 0 {
		head = req[i+2:]
	}
	for len(head) > 0 {
		i := bytes.Index(head, []byte("\r\n"))
		if i <= 0 {
			break
		}
		line := head[:i]
		head = head[i+2:]
		switch {
		case hasFold(line, "Via:"), hasFold(line, "Record-Route:"), hasFold(line, "From:"),
			hasFold(line, "Call-ID:"), hasFold(line, "CSeq:"):
			dst = append(append(dst, line...), "\r\n"...)
		case hasFold(line, "To:"):
			dst = append(dst, line...)
			if toTag != "" && !bytes.Contains(line, []byte(";tag=")) {
				dst = append(append(dst, ";tag="...), toTag...)
			}
			dst = append(dst, "\r\n"...)
		}
	}
	dst = append(dst, "Contact: <sip:"...)
	dst = append(dst, contact...)
	return append(dst, ">\r\nContent-Length: 0\r\n\r\n"...)
}

func hasFold(line []byte, prefix string) bool {
	return len(line) >= len(prefix) && bytes.EqualFold(line[:len(prefix)], []byte(prefix))
}

const benchSDP = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
	"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"

// appendRequest builds a caller's request of call n: an INVITE (with
// SDP, like sipp's uac) when route is nil, else an in-dialog ACK or BYE.
func appendRequest(dst []byte, method, ruri, from string, n, cseq int, route []byte) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, ruri...)
	dst = append(dst, " SIP/2.0\r\nVia: SIP/2.0/UDP "...)
	dst = append(dst, from...)
	dst = append(dst, ";rport;branch=z9hG4bK-"...)
	if method == "ACK" && route == nil { // ACK of a non-2xx: the INVITE's branch
		dst = append(dst, "INVITE"...)
	} else {
		dst = append(dst, method...)
	}
	dst = strconv.AppendInt(dst, int64(n), 10)
	dst = append(dst, "\r\nMax-Forwards: 70\r\n"...)
	if route != nil {
		dst = append(dst, "Route: "...)
		dst = append(dst, route...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "From: \"alice\" <sip:alice@example.com>;tag=caller-"...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	dst = append(dst, "\r\nTo: <sip:conf1@example.com>"...)
	if route != nil {
		dst = append(dst, ";tag=node-"...)
		dst = strconv.AppendInt(dst, int64(n), 10)
	}
	dst = append(dst, "\r\nCall-ID: bench-"...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	dst = append(dst, "@example.com\r\nCSeq: "...)
	dst = strconv.AppendInt(dst, int64(cseq), 10)
	dst = append(dst, ' ')
	if method == "ACK" && route == nil {
		dst = append(dst, "ACK"...)
	} else {
		dst = append(dst, method...)
	}
	dst = append(dst, "\r\nContact: <sip:alice@"...)
	dst = append(dst, from...)
	dst = append(dst, ">\r\nUser-Agent: bench\r\n"...)
	if method == "INVITE" {
		dst = append(dst, "Content-Type: application/sdp\r\nContent-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(benchSDP)), 10)
		dst = append(dst, "\r\n\r\n"...)
		return append(dst, benchSDP...)
	}
	return append(dst, "Content-Length: 0\r\n\r\n"...)
}

// callRig is a proxy on loopback with a caller and a node.
type callRig struct {
	px           *Proxy
	caller, node *rawPeer
	pxAddr       *net.UDPAddr
	ruri         string
	routes       [][]byte // Record-Route of each call set up, for its BYE
}

func newCallRig(tb testing.TB, reject bool) *callRig {
	return newCallRigWith(tb, reject, &benchAdmitter{})
}

// newCallRigWith is newCallRig with the admitter given (its node is set
// unless reject).
func newCallRigWith(tb testing.TB, reject bool, adm *benchAdmitter) *callRig {
	tb.Helper()
	r := &callRig{caller: newRawPeer(tb), node: newRawPeer(tb)}
	if !reject {
		adm.node = ring.Node{Name: "n1", Addr: r.node.addr(), Transport: "udp"}
	}
	px, err := New(Options{Listen: "127.0.0.1:0", RouteSecret: "bench-secret", UserAgent: "sipedge-bench",
		Instance: "edge-a", FailoverAttempts: DefaultFailoverAttempts}, adm, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = px.Serve(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	r.px = px
	r.pxAddr, _ = net.ResolveUDPAddr("udp", px.Addr())
	r.ruri = "sip:conf1@" + px.Addr()
	return r
}

// setUp runs INVITE, 200, ACK of call n through the proxy.
func (r *callRig) setUp(n int, keepRoute bool) {
	c, nd := r.caller, r.node
	c.out = appendRequest(c.out[:0], "INVITE", r.ruri, c.addr(), n, 1, nil)
	c.send(r.pxAddr, c.out)
	inv := nd.recv("INVITE ")
	nd.out = appendAnswer(nd.out[:0], inv, "200 OK", "node-"+strconv.Itoa(n), nd.addr())
	nd.send(r.pxAddr, nd.out)
	ok := c.recv("SIP/2.0 200")
	rr := headerLine(ok, "Record-Route:")
	if rr == nil {
		r.caller.tb.Fatalf("200 without Record-Route:\n%s", ok)
	}
	route := bytes.TrimSpace(rr[len("Record-Route:"):])
	c.out = appendRequest(c.out[:0], "ACK", r.ruri, c.addr(), n, 1, route)
	if keepRoute {
		r.routes = append(r.routes, append([]byte(nil), route...))
	}
	c.send(r.pxAddr, c.out)
	nd.recv("ACK ")
}

// hangUp runs BYE, 200 of call n (set up with keepRoute).
func (r *callRig) hangUp(n int, route []byte) {
	c, nd := r.caller, r.node
	c.out = appendRequest(c.out[:0], "BYE", r.ruri, c.addr(), n, 2, route)
	c.send(r.pxAddr, c.out)
	bye := nd.recv("BYE ")
	nd.out = appendAnswer(nd.out[:0], bye, "200 OK", "", nd.addr())
	nd.send(r.pxAddr, nd.out)
	c.recv("SIP/2.0 200")
}

// BenchmarkCallSetup is one INVITE/200/ACK through the proxy.
func BenchmarkCallSetup(b *testing.B) {
	r := newCallRig(b, false)
	r.setUp(-1, false) // warm up
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.setUp(i, false)
	}
}

// BenchmarkCallInDialog is one BYE/200 of a dialog set up before the clock.
func BenchmarkCallInDialog(b *testing.B) {
	r := newCallRig(b, false)
	for i := 0; i < b.N; i++ {
		r.setUp(i, true)
	}
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.hangUp(i, r.routes[i])
	}
}

// BenchmarkCallReject is one INVITE answered 503 + Retry-After, and its ACK.
// Its ACK carries the 503's To tag (RFC 3261 §17.1.1.3), as sipp's does.
func BenchmarkCallReject(b *testing.B) { runRejects(b, newCallRig(b, true)) }

// BenchmarkCallHeldHeap runs whole calls (set-up and BYE) and reports the
// heap still in use per call once they are all over, while their
// transactions wait out the RFC 3261 timers (32 s): what a finished call
// costs in memory at a steady call rate, times rate × 32 s.
func BenchmarkCallHeldHeap(b *testing.B) {
	r := newCallRig(b, false)
	r.setUp(-1, true)
	r.hangUp(-1, r.routes[0])
	r.routes = r.routes[:0]
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	scanBefore := scannableHeap()
	b.ResetTimer()
	var route []byte
	for i := 0; i < b.N; i++ {
		r.setUp(i, true)
		route = r.routes[0]
		r.routes = r.routes[:0]
		r.hangUp(i, route)
	}
	b.StopTimer()
	time.Sleep(100 * time.Millisecond) // the last relays' goroutines finish
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "heldB/call")
	// What the collector has to scan of it, in every cycle while it is held.
	b.ReportMetric(float64(int64(scannableHeap())-int64(scanBefore))/float64(b.N), "scanB/call")
	if d := r.px.ActiveDialogs(); d != 0 {
		b.Fatalf("%d dialogs still held after every BYE", d)
	}
}

// scannableHeap is the heap the runtime counted as scannable at its last
// cycle (/gc/scan/heap:bytes): objects with pointers.
func scannableHeap() uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

// BenchmarkCallPaced runs b.N whole calls at a fixed rate
// (SIPEDGE_BENCH_RATE calls/s, default 300), so finished transactions pile
// up for their 32 s as in production, and reports the process's CPU per
// call (getrusage: user+system, the peers' little work included) and its
// peak memory (runtime total less released, sampled every 100 ms). Run it
// with GOGC / GOMEMLIMIT set to compare collector settings, e.g.
//
//	GOGC=200 go test -run '^$' -bench CallPaced -benchtime 15000x ./proxy/
func BenchmarkCallPaced(b *testing.B) {
	rate := 300
	if v, err := strconv.Atoi(os.Getenv("SIPEDGE_BENCH_RATE")); err == nil && v > 0 {
		rate = v
	}
	r := newCallRig(b, false)
	stop := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		s := []rtmetrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
		var max uint64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			rtmetrics.Read(s)
			if v := s[0].Value.Uint64() - s[1].Value.Uint64(); v > max {
				max = v
			}
			select {
			case <-stop:
				peak <- max
				return
			case <-t.C:
			}
		}
	}()
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
			time.Sleep(d)
		}
		r.setUp(i, true)
		route := r.routes[0]
		r.routes = r.routes[:0]
		r.hangUp(i, route)
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	close(stop)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/call")
	b.ReportMetric(float64(<-peak)/(1<<20), "peak-MB")
	b.ReportMetric(float64(after.Maxrss)/1024, "maxRSS-MB")
}
