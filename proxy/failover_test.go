package proxy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/ring"
)

// failAdmitter places every call on nodes[0] and fails over along nodes
// in order, as the ring's next node would; it records what it was asked.
type failAdmitter struct {
	fakeAdmitter
	nodes []ring.Node

	mu    sync.Mutex
	asked []string        // "failed>next"
	down  map[string]bool // nodes the ring no longer holds healthy
}

func (f *failAdmitter) Healthy(node string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.down[node]
}

func (f *failAdmitter) setDown(node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down == nil {
		f.down = map[string]bool{}
	}
	f.down[node] = true
}

func (f *failAdmitter) Admit(_ context.Context, r admission.Request) admission.Verdict {
	f.record("admit " + r.Method + " " + r.Key())
	return admission.Verdict{Admit: true, Node: f.nodes[0], Placement: admission.PlacementRing}
}

func (f *failAdmitter) Failover(_ context.Context, _ admission.Request, failed string, tried []string) admission.Verdict {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.nodes {
		if !slices.Contains(tried, n.Name) {
			f.asked = append(f.asked, failed+">"+n.Name)
			return admission.Verdict{Admit: true, Node: n, Placement: admission.PlacementFailover}
		}
	}
	f.asked = append(f.asked, failed+">")
	return admission.Verdict{Code: 503, Reason: admission.ReasonNoNode}
}

func (f *failAdmitter) failovers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

type failoverRig struct {
	px     *Proxy
	adm    *failAdmitter
	nodes  []*peer
	caller *peer
	reg    *prometheus.Registry
}

// newFailoverRig starts a proxy failing over along nodes raw UDP peers;
// setup may change the rig and options before the proxy starts.
func newFailoverRig(t *testing.T, nodes, attempts int, setup ...func(*failoverRig, *Options)) *failoverRig {
	t.Helper()
	r := &failoverRig{adm: &failAdmitter{}, caller: newPeer(t), reg: prometheus.NewRegistry()}
	for i := range nodes {
		p := newPeer(t)
		r.nodes = append(r.nodes, p)
		r.adm.nodes = append(r.adm.nodes, ring.Node{Name: fmt.Sprintf("n%d", i+1), Addr: p.addr(), Transport: "udp"})
	}
	opts := Options{Listen: "127.0.0.1:0", RouteSecret: "test-secret", UserAgent: "sipedge-test",
		FailoverAttempts: attempts, FailoverTimeout: 300 * time.Millisecond}
	for _, f := range setup {
		f(r, &opts)
	}
	px, err := New(opts, r.adm, testLogger(t), r.reg)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, px)
	r.px = px
	return r
}

func (r *failoverRig) failed(reason string) float64 {
	return testutil.ToFloat64(r.px.metrics.failovers.WithLabelValues(reason))
}

func branchOf(msg string) string {
	v := header(msg, "Via")[0]
	i := strings.Index(v, "branch=")
	b := v[i+len("branch="):]
	if j := strings.IndexAny(b, ";,"); j >= 0 {
		b = b[:j]
	}
	return b
}

// A node that says nothing: the INVITE goes to the next node after the
// failover timeout, as the same call on a new branch with a Record-Route
// naming the new node; the dead branch is terminated and a late answer
// from it never reaches the caller.
func TestFailover_SilentNode_RetriedOnNextNode(t *testing.T) {
	r := newFailoverRig(t, 3, 2)
	r.caller.send(r.px.Addr(), invite(r.caller, "sip:conf1@"+r.px.Addr(), "fo-silent", "z9hG4bK-fo1", 70))
	first := r.nodes[0].recv("INVITE ")
	// n1 is dead: no answer. n2 gets the same call.
	second := r.nodes[1].recv("INVITE ")
	if header(second, "Call-ID")[0] != "fo-silent" || branchOf(second) == branchOf(first) {
		t.Fatalf("retry Call-ID %q branch %q (first branch %q)", header(second, "Call-ID"), branchOf(second), branchOf(first))
	}
	if !strings.HasPrefix(second, "INVITE sip:conf1@"+r.nodes[1].addr()+" ") {
		t.Errorf("retry Request-URI not the new node:\n%s", second)
	}
	if rr := header(second, "Record-Route"); len(rr) != 1 || rr[0] == header(first, "Record-Route")[0] {
		t.Errorf("retry Record-Route %q, want one new state (first %q)", rr, header(first, "Record-Route"))
	}
	if mf := header(second, "Max-Forwards"); len(mf) != 1 || mf[0] != "69" {
		t.Errorf("retry Max-Forwards %q, want 69 (decremented once)", mf)
	}
	if v := header(second, "Via"); len(v) != 2 {
		t.Errorf("retry Vias %q, want ours over the caller's", v)
	}
	r.nodes[1].send(r.px.Addr(), answer(second, 200, "OK", "n2tag", r.nodes[1].addr()))
	ok := r.caller.recv("SIP/2.0 200")
	if !strings.Contains(header(ok, "To")[0], "n2tag") {
		t.Fatalf("200 not n2's:\n%s", ok)
	}
	// The terminated branch: n1 stops getting retransmissions, and its late
	// 200 goes nowhere upstream.
	r.nodes[0].drain()
	r.nodes[0].send(r.px.Addr(), answer(first, 200, "OK", "n1tag", r.nodes[0].addr()))
	for _, m := range r.caller.drain() {
		if strings.Contains(m, "n1tag") {
			t.Fatalf("a late answer of the abandoned node reached the caller:\n%s", m)
		}
	}
	// The dialog is n2's: started there, and the caller's BYE follows the
	// new Record-Route to n2.
	waitFor(t, func() bool { return slices.Contains(r.adm.events(), "start conf1 n2") }, "dialog started on n2")
	if got := r.adm.failovers(); !slices.Equal(got, []string{"n1>n2"}) {
		t.Errorf("failovers %v, want [n1>n2]", got)
	}
	if r.failed(failTimeout) != 1 {
		t.Errorf("failover{timeout} = %v, want 1", r.failed(failTimeout))
	}
	route := header(ok, "Record-Route")[0]
	r.caller.send(r.px.Addr(), fmt.Sprintf(`BYE sip:conf1@%s SIP/2.0
Via: SIP/2.0/UDP %s;branch=z9hG4bK-fobye
Max-Forwards: 70
Route: %s
From: <sip:alice@example.com>;tag=caller1
To: <sip:conf1@example.com>;tag=n2tag
Call-ID: fo-silent
CSeq: 2 BYE
Content-Length: 0

`, r.nodes[1].addr(), r.caller.addr(), route))
	if bye := r.nodes[1].recv("BYE "); !strings.Contains(bye, "fo-silent") {
		t.Fatalf("BYE:\n%s", bye)
	}
}

// Final answers: 408 and 5xx move the call to the next node, any other
// answer is the caller's; with the budget spent the last answer is relayed.
func TestFailover_FinalAnswers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		attempts int
		answers  []int // per node, in order; 0 = the node is not reached
		want     int   // what the caller gets
		asked    []string
		reason   string
	}{
		{"503 retried", 2, []int{503, 200}, 200, []string{"n1>n2"}, fail5xx},
		{"500 retried", 2, []int{500, 200}, 200, []string{"n1>n2"}, fail5xx},
		{"408 retried", 2, []int{408, 200}, 200, []string{"n1>n2"}, fail408},
		{"486 Busy goes to the caller", 2, []int{486, 0}, 486, nil, ""},
		{"404 goes to the caller", 2, []int{404, 0}, 404, nil, ""},
		{"two failures, third node answers", 2, []int{503, 500, 200}, 200, []string{"n1>n2", "n2>n3"}, fail5xx},
		{"budget spent: the last 503 is relayed", 1, []int{503, 503, 0}, 503, []string{"n1>n2"}, fail5xx},
		{"no node left: the 503 is relayed", 5, []int{503, 503, 503}, 503, []string{"n1>n2", "n2>n3", "n3>"}, fail5xx},
		{"failover off", 0, []int{503, 0}, 503, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newFailoverRig(t, 3, tc.attempts)
			id := "fo-" + strings.NewReplacer(" ", "-", ",", "", ":", "").Replace(tc.name)
			r.caller.send(r.px.Addr(), invite(r.caller, "sip:conf1@"+r.px.Addr(), id, "z9hG4bK-"+id, 70))
			for i, code := range tc.answers {
				if code == 0 {
					if got := r.nodes[i].drain(); len(got) != 0 {
						t.Fatalf("node %d reached: %q", i+1, got)
					}
					continue
				}
				inv := r.nodes[i].recv("INVITE ")
				r.nodes[i].send(r.px.Addr(), answer(inv, 100, "Trying", "", r.nodes[i].addr()))
				r.nodes[i].send(r.px.Addr(), answer(inv, code, "Answer", fmt.Sprintf("tag%d", i+1), r.nodes[i].addr()))
			}
			res := r.caller.recv(fmt.Sprintf("SIP/2.0 %d", tc.want))
			if got := r.adm.failovers(); !slices.Equal(got, tc.asked) {
				t.Errorf("failovers asked %v, want %v", got, tc.asked)
			}
			if tc.reason != "" && r.failed(tc.reason) == 0 {
				t.Errorf("failover{%s} not counted", tc.reason)
			}
			for _, m := range r.caller.drain() {
				if strings.HasPrefix(m, "SIP/2.0 ") && !strings.HasPrefix(m, "SIP/2.0 100") && m != res {
					t.Errorf("caller got a second answer:\n%s", m)
				}
			}
		})
	}
}

// A node that sent 100 and then nothing is cancelled when the call moves
// on; the caller's CANCEL during the next attempt reaches the new node.
func TestFailover_TryingThenSilent_CancelledAndCallerCancelFollows(t *testing.T) {
	r := newFailoverRig(t, 2, 2)
	inv := invite(r.caller, "sip:conf1@"+r.px.Addr(), "fo-cancel", "z9hG4bK-focx", 70)
	r.caller.send(r.px.Addr(), inv)
	first := r.nodes[0].recv("INVITE ")
	r.nodes[0].send(r.px.Addr(), answer(first, 100, "Trying", "", r.nodes[0].addr()))
	c1 := r.nodes[0].recv("CANCEL ")
	if branchOf(c1) != branchOf(first) {
		t.Errorf("CANCEL branch %q, want the abandoned INVITE's %q", branchOf(c1), branchOf(first))
	}
	second := r.nodes[1].recv("INVITE ")
	r.nodes[1].send(r.px.Addr(), answer(second, 180, "Ringing", "n2tag", r.nodes[1].addr()))
	r.caller.recv("SIP/2.0 180")

	cancel := strings.Replace(strings.Replace(inv, "INVITE sip:", "CANCEL sip:", 1), "CSeq: 1 INVITE", "CSeq: 1 CANCEL", 1)
	r.caller.send(r.px.Addr(), cancel)
	r.caller.recv("SIP/2.0 200")
	c2 := r.nodes[1].recv("CANCEL ")
	if branchOf(c2) != branchOf(second) {
		t.Errorf("caller's CANCEL went to branch %q, want the live one %q", branchOf(c2), branchOf(second))
	}
	r.nodes[1].send(r.px.Addr(), answer(c2, 200, "OK", "", r.nodes[1].addr()))
	r.nodes[1].send(r.px.Addr(), answer(second, 487, "Request Terminated", "n2tag", r.nodes[1].addr()))
	r.caller.recv("SIP/2.0 487")

	// The abandoned node answers 200 after all (it crossed the CANCEL):
	// sipedge ACKs and hangs up that dialog itself; the caller hears nothing.
	r.nodes[0].send(r.px.Addr(), answer(first, 200, "OK", "n1tag", r.nodes[0].addr()))
	r.nodes[0].recv("ACK ")
	bye := r.nodes[0].recv("BYE ")
	if !strings.Contains(bye, "fo-cancel") || !strings.Contains(bye, "n1tag") {
		t.Errorf("BYE for the late 2xx:\n%s", bye)
	}
	for _, m := range r.caller.drain() {
		if strings.Contains(m, "n1tag") {
			t.Fatalf("the abandoned node's answer reached the caller:\n%s", m)
		}
	}
}

// The caller cancels while the first node is still silent: no other node
// is tried, and the caller gets its 487.
func TestFailover_CallerCancelBeforeAnyAnswer_NoRetry(t *testing.T) {
	r := newFailoverRig(t, 2, 2)
	inv := invite(r.caller, "sip:conf1@"+r.px.Addr(), "fo-cancel2", "z9hG4bK-focx2", 70)
	r.caller.send(r.px.Addr(), inv)
	r.nodes[0].recv("INVITE ")
	cancel := strings.Replace(strings.Replace(inv, "INVITE sip:", "CANCEL sip:", 1), "CSeq: 1 INVITE", "CSeq: 1 CANCEL", 1)
	r.caller.send(r.px.Addr(), cancel)
	r.caller.recv("SIP/2.0 487")
	time.Sleep(500 * time.Millisecond) // past the failover timeout
	for _, m := range r.nodes[1].drain() {
		if strings.HasPrefix(m, "INVITE ") {
			t.Fatalf("a cancelled call was retried on n2:\n%s", m)
		}
	}
	if got := r.adm.failovers(); len(got) != 0 {
		t.Errorf("failovers %v after CANCEL", got)
	}
}

// A node over TCP that refuses the connection fails at once: the call
// moves on without waiting for the failover timeout.
func TestFailover_UnreachableTCPNode_RetriedAtOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close() // nothing listens there any more: connect is refused
	r := newFailoverRig(t, 2, 2, func(r *failoverRig, o *Options) {
		o.FailoverTimeout = time.Minute // only a transport error can move it in time
		r.adm.nodes[0] = ring.Node{Name: "n1", Addr: closed, Transport: "tcp"}
	})
	r.caller.send(r.px.Addr(), invite(r.caller, "sip:conf1@"+r.px.Addr(), "fo-tcp", "z9hG4bK-fotcp", 70))
	inv := r.nodes[1].recv("INVITE ")
	r.nodes[1].send(r.px.Addr(), answer(inv, 200, "OK", "n2tag", r.nodes[1].addr()))
	r.caller.recv("SIP/2.0 200")
	if r.failed(failTransport) != 1 {
		t.Errorf("failover{transport} = %v, want 1", r.failed(failTransport))
	}
	if got := r.adm.failovers(); !slices.Equal(got, []string{"n1>n2"}) {
		t.Errorf("failovers %v", got)
	}
}

// A node that rang (180) and then died holds the call only until the ring
// stops holding it healthy: then the call goes to the next node like a
// forking proxy's next branch, and the rung node is cancelled.
func TestFailover_RangThenDied_MovedWhenNodeUnhealthy(t *testing.T) {
	r := newFailoverRig(t, 2, 2)
	r.caller.send(r.px.Addr(), invite(r.caller, "sip:conf1@"+r.px.Addr(), "fo-rang", "z9hG4bK-forang", 70))
	first := r.nodes[0].recv("INVITE ")
	r.nodes[0].send(r.px.Addr(), answer(first, 180, "Ringing", "n1tag", r.nodes[0].addr()))
	r.caller.recv("SIP/2.0 180")
	// Past the failover timeout: a ringing node is not failed over for silence.
	time.Sleep(500 * time.Millisecond)
	if got := r.adm.failovers(); len(got) != 0 {
		t.Fatalf("a ringing node was failed over for silence: %v", got)
	}
	r.adm.setDown("n1") // another call found it dead, or the probes did
	second := r.nodes[1].recv("INVITE ")
	if c := r.nodes[0].recv("CANCEL "); branchOf(c) != branchOf(first) {
		t.Errorf("CANCEL of the rung branch on branch %q, want %q", branchOf(c), branchOf(first))
	}
	r.nodes[1].send(r.px.Addr(), answer(second, 200, "OK", "n2tag", r.nodes[1].addr()))
	ok := r.caller.recv("SIP/2.0 200")
	if !strings.Contains(header(ok, "To")[0], "n2tag") {
		t.Fatalf("200 not n2's:\n%s", ok)
	}
	if r.failed(failNodeDown) != 1 {
		t.Errorf("failover{node_down} = %v, want 1", r.failed(failNodeDown))
	}
	waitFor(t, func() bool { return slices.Contains(r.adm.events(), "start conf1 n2") }, "dialog started on n2")
}

// After a 180, a 5xx is the caller's (the call was the node's): relayed.
func TestFailover_RangThen503_Relayed(t *testing.T) {
	r := newFailoverRig(t, 2, 2)
	r.caller.send(r.px.Addr(), invite(r.caller, "sip:conf1@"+r.px.Addr(), "fo-rang503", "z9hG4bK-forang5", 70))
	first := r.nodes[0].recv("INVITE ")
	r.nodes[0].send(r.px.Addr(), answer(first, 180, "Ringing", "n1tag", r.nodes[0].addr()))
	r.caller.recv("SIP/2.0 180") // sipgo handles each datagram on its own goroutine: keep the order
	r.nodes[0].send(r.px.Addr(), answer(first, 503, "Service Unavailable", "n1tag", r.nodes[0].addr()))
	r.caller.recv("SIP/2.0 503")
	for _, m := range r.nodes[1].drain() {
		if strings.HasPrefix(m, "INVITE ") {
			t.Fatalf("retried after a 180:\n%s", m)
		}
	}
}
