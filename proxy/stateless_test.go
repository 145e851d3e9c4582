package proxy

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/ring"
)

// slAdmitter is a fakeAdmitter that also decides immediately: every new
// dialog gets verdict (when immediate is set), and it records what the
// proxy asked.
type slAdmitter struct {
	*fakeAdmitter
	mu        sync.Mutex
	verdict   admission.Verdict
	immediate bool
	rejecting bool     // Rejecting answers true without an immediate verdict
	asked     []string // "immediate M key", "rejected M cause"
}

func (a *slAdmitter) Rejecting() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.immediate || a.rejecting
}
func (a *slAdmitter) Immediate(req admission.Request) (admission.Verdict, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, "immediate "+req.Method+" "+req.Key())
	return a.verdict, a.immediate
}
func (a *slAdmitter) Rejected(req admission.Request, v admission.Verdict) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, "rejected "+req.Method+" "+v.Cause)
}
func (a *slAdmitter) calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.asked...)
}

var (
	verdictDeserviced = admission.Verdict{Code: 503, Reason: admission.ReasonMaintenance, Cause: admission.CauseDeserviced, RetryAfter: 17}
	verdictShutdown   = admission.Verdict{Code: 503, Reason: admission.ReasonShutdown, Cause: admission.CauseShutdown, RetryAfter: 5}
	verdictNoNode     = admission.Verdict{Code: 503, Reason: admission.ReasonNoNode, Cause: admission.CauseNoNode, RetryAfter: 9}
	verdictRedirect   = admission.Verdict{Code: 302, Reason: "Moved Temporarily", Cause: admission.CauseRedirected, Contact: "127.0.0.9:5070"}
)

func startStateless(t *testing.T, adm *slAdmitter, opts Options) *Proxy {
	return startStatelessReading(t, adm, opts, false)
}

// startStatelessReading starts a proxy whose stateless path parses every
// request with sipgo when parsedOnly (no bytes-only reading).
func startStatelessReading(t *testing.T, adm *slAdmitter, opts Options, parsedOnly bool) *Proxy {
	t.Helper()
	opts.Listen, opts.RouteSecret, opts.UserAgent = "127.0.0.1:0", "test-secret", "sipedge-test"
	px, err := New(opts, adm, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	px.sl.parsedOnly = parsedOnly
	serve(t, px)
	return px
}

// readings are the two ways the stateless path reads a request.
var readings = []struct {
	name       string
	parsedOnly bool
}{{"bytes", false}, {"parsed", true}}

// newDialogRequest is a caller's out-of-dialog request with extra header
// lines (each ending in "\n").
func newDialogRequest(method, ruri string, from *peer, callID, branch, extra string) string {
	return fmt.Sprintf(`%s %s SIP/2.0
Via: SIP/2.0/UDP %s;branch=%s;rport
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-lower
Max-Forwards: 70
From: "Alice" <sip:alice@example.com>;tag=caller1
To: <sip:conf1@example.com>
Call-ID: %s
CSeq: 1 %s
Contact: <sip:alice@%s>
%sContent-Length: 0

`, method, ruri, from.addr(), branch, callID, method, from.addr(), extra)
}

func parseResponse(t *testing.T, raw string) *sip.Response {
	t.Helper()
	msg, err := newParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatalf("answer does not parse: %v\n%s", err, raw)
	}
	res, ok := msg.(*sip.Response)
	if !ok {
		t.Fatalf("not a response:\n%s", raw)
	}
	return res
}

// Each immediate verdict is answered with no transaction: no 100 Trying
// first, and an answer that parses back with sipgo and carries the RFC
// 3261 §8.2.6.2 headers, this path's To tag and the verdict's own.
func TestStateless_ImmediateVerdictsAnsweredWithoutTransaction(t *testing.T) {
	for _, tc := range []struct {
		name    string
		method  string
		verdict admission.Verdict
		want    string // status line
		check   func(t *testing.T, res *sip.Response, raw string)
	}{
		{"deserviced INVITE", "INVITE", verdictDeserviced, "SIP/2.0 503 System in maintenance mode", func(t *testing.T, res *sip.Response, raw string) {
			requireHeader(t, raw, "Retry-After", "17")
		}},
		{"deserviced REGISTER", "REGISTER", verdictDeserviced, "SIP/2.0 503 System in maintenance mode", func(t *testing.T, res *sip.Response, raw string) {
			requireHeader(t, raw, "Retry-After", "17")
		}},
		{"deserviced SUBSCRIBE", "SUBSCRIBE", verdictDeserviced, "SIP/2.0 503 System in maintenance mode", func(t *testing.T, res *sip.Response, raw string) {
			requireHeader(t, raw, "Retry-After", "17")
		}},
		{"shutting down", "INVITE", verdictShutdown, "SIP/2.0 503 Instance shutting down", func(t *testing.T, res *sip.Response, raw string) {
			requireHeader(t, raw, "Retry-After", "5")
		}},
		{"no node", "REGISTER", verdictNoNode, "SIP/2.0 503 No media node available", func(t *testing.T, res *sip.Response, raw string) {
			requireHeader(t, raw, "Retry-After", "9")
		}},
		{"redirected", "INVITE", verdictRedirect, "SIP/2.0 302 Moved Temporarily", func(t *testing.T, res *sip.Response, raw string) {
			requireHeader(t, raw, "Contact", "<sip:conf1@127.0.0.9:5070>")
			if len(header(raw, "Retry-After")) != 0 {
				t.Errorf("302 with Retry-After:\n%s", raw)
			}
		}},
	} {
		for _, rd := range readings {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				adm := &slAdmitter{fakeAdmitter: &fakeAdmitter{}, verdict: tc.verdict, immediate: true}
				px := startStatelessReading(t, adm, Options{}, rd.parsedOnly)
				caller := newPeer(t)
				id := "sl-" + strings.ReplaceAll(tc.name, " ", "-")
				caller.send(px.Addr(), newDialogRequest(tc.method, "sip:conf1@"+px.Addr(), caller, id, "z9hG4bK-sl1", ""))
				raw := caller.recv("SIP/2.0 ")
				if !strings.HasPrefix(raw, tc.want+"\r\n") {
					t.Fatalf("first answer %q, want %q (no 100 Trying before it)", firstLine([]byte(raw)), tc.want)
				}
				res := parseResponse(t, raw)
				vias := header(raw, "Via")
				if len(vias) != 2 || !strings.Contains(vias[0], "branch=z9hG4bK-sl1") || !strings.Contains(vias[0], "received=127.0.0.1") ||
					!strings.Contains(vias[0], "rport="+strings.Split(caller.addr(), ":")[1]) || !strings.Contains(vias[1], "z9hG4bK-lower") {
					t.Errorf("Vias %q: want both, the top one with received and rport", vias)
				}
				if res.CallID() == nil || res.CallID().Value() != id {
					t.Errorf("Call-ID %v, want %s", res.CallID(), id)
				}
				if cs := res.CSeq(); cs == nil || cs.SeqNo != 1 || string(cs.MethodName) != tc.method {
					t.Errorf("CSeq %v, want 1 %s", cs, tc.method)
				}
				if tag, _ := res.From().Params.Get("tag"); tag != "caller1" || res.From().DisplayName != "Alice" {
					t.Errorf("From %v, want Alice's with tag caller1", res.From())
				}
				if tag, _ := res.To().Params.Get("tag"); !strings.HasPrefix(tag, px.sl.tag) {
					t.Errorf("To tag %q, want the stateless prefix %q", tag, px.sl.tag)
				}
				requireHeader(t, raw, "Server", "sipedge-test")
				requireHeader(t, raw, "Content-Length", "0")
				tc.check(t, res, raw)
				if got := adm.calls(); len(got) != 2 || got[1] != "rejected "+tc.method+" "+tc.verdict.Cause {
					t.Errorf("admitter asked %q, want immediate then rejected", got)
				}
				if ev := adm.events(); len(ev) != 0 {
					t.Errorf("Admit called %q: the stateful path ran", ev)
				}
				if n := testutil.ToFloat64(px.metrics.stateless.answers); n != 1 {
					t.Errorf("stateless answers %v, want 1", n)
				}
				if n := testutil.ToFloat64(px.metrics.requests[sip.RequestMethod(tc.method)]); n != 1 {
					t.Errorf("requests{%s} %v, want 1", tc.method, n)
				}
				if n := testutil.ToFloat64(px.metrics.responses[sip.RequestMethod(tc.method)][tc.verdict.Code/100-1]); n != 1 {
					t.Errorf("responses{%s} %v, want 1", tc.method, n)
				}
				if extra := caller.drain(); len(extra) != 0 {
					t.Errorf("more was sent: %q", extra)
				}
			})
		}
	}
}

func requireHeader(t *testing.T, raw, name, want string) {
	t.Helper()
	if got := header(raw, name); len(got) != 1 || got[0] != want {
		t.Errorf("%s %q, want %q\n%s", name, got, want, raw)
	}
}

// A retransmission gets the very same bytes; the ACK of the answer (with
// its To tag) is absorbed: never forwarded, never a transaction, and
// not taken for an ACK without a route.
func TestStateless_RetransmissionSameAnswer_AckAbsorbed(t *testing.T) {
	for _, rd := range readings {
		t.Run(rd.name, func(t *testing.T) { testRetransmissionAndAck(t, rd.parsedOnly) })
	}
}

func testRetransmissionAndAck(t *testing.T, parsedOnly bool) {
	adm := &slAdmitter{fakeAdmitter: &fakeAdmitter{}, verdict: verdictDeserviced, immediate: true}
	px := startStatelessReading(t, adm, Options{}, parsedOnly)
	caller := newPeer(t)
	req := newDialogRequest("INVITE", "sip:conf1@"+px.Addr(), caller, "sl-rtx", "z9hG4bK-rtx", "")
	caller.send(px.Addr(), req)
	first := caller.recv("SIP/2.0 503")
	caller.send(px.Addr(), req)
	second := caller.recv("SIP/2.0 503")
	if first != second {
		t.Fatalf("retransmission answered differently:\n%s\n---\n%s", first, second)
	}
	tag, _ := parseResponse(t, first).To().Params.Get("tag")
	ack := strings.Replace(strings.Replace(req, "INVITE sip:", "ACK sip:", 1), "CSeq: 1 INVITE", "CSeq: 1 ACK", 1)
	ack = strings.Replace(ack, "To: <sip:conf1@example.com>", "To: <sip:conf1@example.com>;tag="+tag, 1)
	caller.send(px.Addr(), ack)
	caller.send(px.Addr(), ack)
	waitFor(t, func() bool { return testutil.ToFloat64(px.metrics.stateless.acks) == 2 }, "both ACKs absorbed")
	if n := testutil.ToFloat64(px.metrics.badRoutes); n != 0 {
		t.Errorf("bad routes %v: an ACK reached forwardAck", n)
	}
	if n := testutil.ToFloat64(px.metrics.requests[sip.ACK]); n != 0 {
		t.Errorf("ACKs counted as requests handled: %v", n)
	}
	// An ACK with another To tag is not ours: it goes the usual way (to
	// the conference's node by placement, as from a UA ignoring Record-Route).
	caller.send(px.Addr(), strings.Replace(ack, ";tag="+tag, ";tag=sl0000000000-1", 1))
	waitFor(t, func() bool { return testutil.ToFloat64(px.metrics.placementRouted) == 1 }, "a foreign ACK taken to forwardAck")
	if n := testutil.ToFloat64(px.metrics.stateless.answers); n != 2 {
		t.Errorf("stateless answers %v, want 2", n)
	}
}

// Requests the stateless path must leave to the stateful one, with
// nothing counted or asked: they carry a To tag or sipedge's route, they
// are a node's call, a check before admission answers them, or the
// verdict is not immediate.
func TestStateless_NotForInDialogNodeCallsOrChecksBeforeAdmission(t *testing.T) {
	px0 := startStateless(t, &slAdmitter{fakeAdmitter: &fakeAdmitter{}}, Options{})
	route := "<sip:" + px0.Addr() + ";lr;" + routeParam + "=" + px0.signer.Encode(routeState{NodeName: "n1", NodeAddr: "127.0.0.1:9", FromTag: "caller1"}) + ">"
	for _, tc := range []struct {
		name      string
		method    string
		edit      func(req string) string
		rejecting bool   // Rejecting true but Immediate false
		want      string // first answer's status line prefix ("": none expected)
	}{
		{"To tag", "INVITE", func(r string) string {
			return strings.Replace(r, "To: <sip:conf1@example.com>", "To: <sip:conf1@example.com>;tag=node1", 1)
		}, false, ""},
		{"sipedge route", "INVITE", func(r string) string {
			return strings.Replace(r, "Max-Forwards: 70\n", "Max-Forwards: 70\nRoute: "+route+"\n", 1)
		}, false, ""},
		{"node call", "INVITE", func(r string) string {
			return strings.Replace(r, "Content-Length: 0", "X-Sipedge-Conference: conf1\r\nContent-Length: 0", 1)
		}, false, "SIP/2.0 100"},
		{"Max-Forwards 0", "INVITE", func(r string) string {
			return strings.Replace(r, "Max-Forwards: 70", "Max-Forwards: 0", 1)
		}, false, "SIP/2.0 483"},
		{"Proxy-Require", "REGISTER", func(r string) string {
			return strings.Replace(r, "Content-Length: 0", "Proxy-Require: foo\r\nContent-Length: 0", 1)
		}, false, "SIP/2.0 420"},
		{"missing From tag", "SUBSCRIBE", func(r string) string { return strings.Replace(r, ";tag=caller1", "", 1) }, false, "SIP/2.0 400"},
		{"no conference id", "INVITE", func(r string) string {
			return strings.Replace(r, "INVITE sip:conf1@", "INVITE sip:", 1)
		}, false, "SIP/2.0 100"},
		{"verdict needs Admit", "INVITE", func(r string) string { return r }, true, "SIP/2.0 100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adm := &slAdmitter{fakeAdmitter: &fakeAdmitter{}, verdict: verdictDeserviced, immediate: !tc.rejecting, rejecting: tc.rejecting}
			px := startStateless(t, adm, Options{})
			caller := newPeer(t)
			caller.send(px.Addr(), tc.edit(newDialogRequest(tc.method, "sip:conf1@"+px.Addr(), caller, "sl-not-"+tc.name, "z9hG4bK-n", "")))
			if tc.want != "" {
				if raw := caller.recv("SIP/2.0 "); !strings.HasPrefix(raw, tc.want) {
					t.Errorf("first answer %q, want %q", firstLine([]byte(raw)), tc.want)
				}
			}
			time.Sleep(50 * time.Millisecond)
			want := 0
			if tc.rejecting {
				want = 1 // asked, and it said no
			}
			if got := adm.calls(); len(got) != want || want == 1 && !strings.HasPrefix(got[0], "immediate ") {
				t.Errorf("admitter asked %q", got)
			}
			if n := testutil.ToFloat64(px.metrics.stateless.answers); n != 0 {
				t.Errorf("answered statelessly (%v)", n)
			}
		})
	}
}

// A source above its flood limit gets the limit's 503, statelessly too:
// the limits come before admission, as on the stateful path.
func TestStateless_FloodLimitBeforeVerdict(t *testing.T) {
	adm := &slAdmitter{fakeAdmitter: &fakeAdmitter{}, verdict: verdictDeserviced, immediate: true}
	px := startStateless(t, adm, Options{Limits: LimitOptions{SourceRate: 1, SourceBurst: 1, SourceDropRate: 100, RetryAfter: 3}})
	caller := newPeer(t)
	caller.send(px.Addr(), newDialogRequest("REGISTER", "sip:conf1@"+px.Addr(), caller, "sl-fl-1", "z9hG4bK-f1", ""))
	if raw := caller.recv("SIP/2.0 "); !strings.HasPrefix(raw, "SIP/2.0 503 System in maintenance mode") {
		t.Fatalf("first REGISTER: %q", firstLine([]byte(raw)))
	}
	caller.send(px.Addr(), newDialogRequest("REGISTER", "sip:conf1@"+px.Addr(), caller, "sl-fl-2", "z9hG4bK-f2", ""))
	raw := caller.recv("SIP/2.0 ")
	if !strings.HasPrefix(raw, "SIP/2.0 503 Service Unavailable (source_rate)") {
		t.Fatalf("second REGISTER above the source rate: %q", firstLine([]byte(raw)))
	}
	requireHeader(t, raw, "Retry-After", "3")
	if n := testutil.ToFloat64(px.limitMetrics.limited[limitSourceRate]); n != 1 {
		t.Errorf("limited{source rate} %v, want 1", n)
	}
	if got := adm.calls(); len(got) != 3 || got[1] != "rejected REGISTER deserviced" {
		t.Errorf("admitter asked %q: the limited one must not count as a deservice rejection", got)
	}
}

// While the admitter is not rejecting, nothing is parsed or asked: every
// request takes the stateful path.
func TestStateless_OffWhileNotRejecting(t *testing.T) {
	node := newPeer(t)
	adm := &slAdmitter{fakeAdmitter: &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}}}
	px := startStateless(t, adm, Options{})
	caller := newPeer(t)
	caller.send(px.Addr(), newDialogRequest("INVITE", "sip:conf1@"+px.Addr(), caller, "sl-off", "z9hG4bK-off", ""))
	node.recv("INVITE ")
	if got := adm.calls(); len(got) != 0 {
		t.Errorf("Immediate asked %q while not rejecting", got)
	}
}

func TestRawToTag(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{"ACK sip:a@b SIP/2.0\r\nVia: x\r\nTo: <sip:c@d>;tag=abc\r\n\r\n", "abc"},
		{"ACK sip:a@b SIP/2.0\r\nt: <sip:c@d>;x=1;TAG=abc;y\r\n\r\n", "abc"},
		{"ACK sip:a@b SIP/2.0\r\nTo: sip:c@d;tag=abc\r\n\r\n", "abc"},
		{"ACK sip:a@b SIP/2.0\r\nTo: \"tag=no\" <sip:c@d;tag=uri>\r\n\r\n", ""},
		{"ACK sip:a@b SIP/2.0\r\nTo: <sip:c@d>\r\n ;tag=folded\r\n\r\n", "folded"},
		{"ACK sip:a@b SIP/2.0\r\nTopic: ;tag=no\r\nTo: <sip:c@d>\r\n\r\n", ""},
		{"ACK sip:a@b SIP/2.0\r\nFrom: <sip:c@d>;tag=from\r\n\r\nTo: <sip:c@d>;tag=body\r\n", ""},
		{"ACK sip:a@b SIP/2.0\r\nTo: <sip:c@d>;tag=\r\n\r\n", ""},
		{"garbage", ""},
	} {
		if got := string(rawToTag([]byte(tc.msg))); got != tc.want {
			t.Errorf("rawToTag(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}
