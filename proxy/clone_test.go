package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

const cloneInvite = "INVITE sip:conf1@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.3:40000;branch=z9hG4bK-c1;rport\r\n" +
	"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-up\r\n" +
	"Max-Forwards: 70\r\n" +
	"Route: <sip:127.0.0.1:5060;lr>\r\n" +
	"From: <sip:alice@example.com>;tag=caller1\r\n" +
	"To: <sip:conf1@example.com>\r\n" +
	"Call-ID: clone-1\r\nCSeq: 1 INVITE\r\n" +
	"Contact: <sip:alice@127.0.0.3:40000>\r\n" +
	"X-Sipedge-Role: host\r\n" +
	"Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"

// TestForwardCopy_LeavesTheIncomingRequestAlone applies each change the
// proxy makes to a forwarded request and checks the request it came from
// (the server transaction's, from which sipgo and the proxy build their
// answers) still reads as it arrived.
func TestForwardCopy_LeavesTheIncomingRequestAlone(t *testing.T) {
	p := benchProxy()
	p.metrics, _ = newMetrics(prometheus.NewRegistry())
	edits := []struct {
		name string
		edit func(out *sip.Request)
		sent string // what the forwarded copy must then contain
	}{
		{"per-hop (Via, received, Max-Forwards)", func(out *sip.Request) {
			in := out // prepareForward marks the sender's Via of the copy
			p.prepareForward(in, out, hop{addr: "127.0.0.2:5070", transport: "udp"}, []byte("z9hG4bK-ours"), nil)
		}, "Max-Forwards: 69"},
		{"Request-URI", func(out *sip.Request) { out.Recipient.Host, out.Recipient.Port = "127.0.0.2", 5070 }, "INVITE sip:conf1@127.0.0.2:5070 "},
		{"routes dropped", func(out *sip.Request) { dropRoutes(out, 1) }, "From:"},
		{"trusted headers stripped", func(out *sip.Request) { removeTrusted(out) }, "Call-ID:"},
		{"Record-Route", func(out *sip.Request) {
			rr := p.recordRoute(out, routeState{NodeTransport: "udp", PeerTransport: "udp", FromTag: "caller1"})
			out.PrependHeader(rr.list()...)
		}, "Record-Route: <sip:127.0.0.1:5060;transport=udp;lr;"},
		{"body anchored", func(out *sip.Request) { out.SetBody([]byte("v=0\r\nc=IN IP4 192.0.2.1\r\n")) }, "Content-Length: 25"},
	}
	for _, tc := range edits {
		t.Run(tc.name, func(t *testing.T) {
			in := parseRequest(t, cloneInvite)
			in.SetSource("127.0.0.3:40000")
			before := in.String()
			out := forwardCopy(in)
			tc.edit(out)
			if got := in.String(); got != before {
				t.Errorf("incoming request changed:\n%s\nwant\n%s", got, before)
			}
			if !strings.Contains(out.String(), tc.sent) {
				t.Errorf("forwarded copy lacks %q:\n%s", tc.sent, out)
			}
			if r := sip.NewResponseFromRequest(in, 487, "Request Terminated", nil); len(r.GetHeaders("Via")) != 2 {
				t.Errorf("a response built from the incoming request has Vias %v", r.GetHeaders("Via"))
			}
		})
	}
}

// The relayed response is the received one with the proxy's Via gone, and
// a response without a Via for the next hop is not relayed.
func TestUpstream(t *testing.T) {
	for _, tc := range []struct {
		name, vias string
		relayed    bool
	}{
		{"two Vias", "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours\r\nVia: SIP/2.0/UDP 127.0.0.3:40000;branch=z9hG4bK-c1;received=127.0.0.3;rport=40000\r\n", true},
		{"only ours", "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := newParser().ParseSIP([]byte("SIP/2.0 200 OK\r\n" + tc.vias +
				"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: u1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			res := msg.(*sip.Response)
			res.SetSource("127.0.0.2:5070")
			r := upstream(res)
			if (r != nil) != tc.relayed {
				t.Fatalf("relayed = %v, want %v", r != nil, tc.relayed)
			}
			if r == nil {
				return
			}
			if vias := r.GetHeaders("Via"); len(vias) != 1 || !strings.Contains(vias[0].Value(), "z9hG4bK-c1") {
				t.Errorf("relayed Vias = %v, want only the caller's", vias)
			}
			if r.Destination() != "127.0.0.3:40000" {
				t.Errorf("destination = %q, want the caller's received/rport", r.Destination())
			}
			if r.Source() != "127.0.0.2:5070" {
				t.Errorf("source = %q, want the node's (trust is judged by it)", r.Source())
			}
		})
	}
}

type doneTx struct {
	sip.ServerTransaction
	done chan struct{}
	fns  []sip.FnTxTerminate
}

func (d *doneTx) Done() <-chan struct{} { return d.done }
func (d *doneTx) OnTerminate(f sip.FnTxTerminate) bool {
	select {
	case <-d.done:
		return false
	default:
	}
	d.fns = append(d.fns, f)
	return true
}
func (d *doneTx) terminate() {
	close(d.done)
	for _, f := range d.fns {
		f("k", nil)
	}
}

// The transaction's context ends with it, and so does one derived from it.
func TestTxContext(t *testing.T) {
	tx := &doneTx{done: make(chan struct{})}
	ctx := txContext(tx)
	child, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	if ctx.Err() != nil || child.Err() != nil {
		t.Fatalf("live transaction: ctx %v, child %v", ctx.Err(), child.Err())
	}
	stopped, stop := context.WithCancel(ctx)
	stop() // a derived context cancelled first unhooks itself
	tx.terminate()
	<-child.Done()
	if ctx.Err() != context.Canceled || child.Err() != context.Canceled || stopped.Err() != context.Canceled {
		t.Errorf("after termination: ctx %v, child %v, stopped %v", ctx.Err(), child.Err(), stopped.Err())
	}
	if txContext(nil).Done() != nil {
		t.Error("no transaction: want a context that never ends")
	}
}
