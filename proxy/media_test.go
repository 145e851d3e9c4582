package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/internal/nodeauth"
	"github.com/sipedge/sipedge/media"
	"github.com/sipedge/sipedge/ring"
)

// SPEC §5: sipedge rewrites the SDP of offers and answers so every leg's
// RTP flows through its relay, frees the relay when a call ends or fails,
// and lets only media nodes and trusted networks set X-Sipedge-* headers.
// These tests run real UDP peers against a proxy whose Media is a recorder.

// An answered call is anchored in both directions: the offer (in the
// INVITE, or in the 200 with the answer in the ACK) and the answer.
func TestMedia_AnchorsNewInvite(t *testing.T) {
	cases := []struct {
		name                     string
		inviteSDP, okSDP, ackSDP string
		wantSDP                  []string // fromCaller of each SDP call, in order
	}{
		{name: "early offer", inviteSDP: offerSDP, okSDP: answerSDP,
			wantSDP: []string{"sdp c1 fromCaller=true", "sdp c1 fromCaller=false"}},
		{name: "late offer", okSDP: offerSDP, ackSDP: answerSDP,
			wantSDP: []string{"sdp c1 fromCaller=false", "sdp c1 fromCaller=true"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			node, caller := newPeer(t), newPeer(t)
			md := &mediaRec{}
			px, _ := startMediaProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}},
				func(o *Options) { o.Media = md })

			caller.send(px.Addr(), withSDP(invite(caller, "sip:conf1@"+px.Addr(), "c1", "z9hG4bK-a1", 70), tc.inviteSDP))
			inv := node.recv("INVITE ")
			if got, want := sdpOf(t, inv), rewritten(tc.inviteSDP, true); got != want {
				t.Errorf("node got INVITE body\n%q\nwant\n%q", got, want)
			}
			if n := len(md.joins()); n != 0 {
				t.Errorf("Joined called %d times before the 2xx", n)
			}

			node.send(px.Addr(), withSDP(answer(inv, 200, "OK", "node1", node.addr()), tc.okSDP))
			ok := caller.recv("SIP/2.0 200")
			if got, want := sdpOf(t, ok), rewritten(tc.okSDP, false); got != want {
				t.Errorf("caller got 200 body\n%q\nwant\n%q", got, want)
			}
			waitFor(t, func() bool { return len(md.joins()) > 0 }, "Joined")
			want := media.Join{CallID: "c1", ConfID: "conf1", AOR: "alice@example.com"}
			if j := md.joins(); len(j) != 1 || j[0] != want {
				t.Errorf("Joined = %+v, want once %+v", j, want)
			}

			c := callerSide(caller, node, "c1", header(ok, "Record-Route")[0])
			caller.send(px.Addr(), withSDP(c.request("ACK", 1, "z9hG4bK-a2"), tc.ackSDP))
			ack := node.recv("ACK ")
			if got, want := sdpOf(t, ack), rewritten(tc.ackSDP, true); got != want {
				t.Errorf("node got ACK body\n%q\nwant\n%q", got, want)
			}
			if md.has("ended c1") {
				t.Fatal("media ended before the BYE")
			}

			caller.send(px.Addr(), c.request("BYE", 2, "z9hG4bK-a3"))
			bye := node.recv("BYE ")
			node.send(px.Addr(), answer(bye, 200, "OK", "", node.addr()))
			caller.recv("SIP/2.0 200")
			waitFor(t, func() bool { return md.has("ended c1") }, "Ended after BYE")

			want2 := append(append([]string{"open c1 conf1 endpointIsCaller=true"}, tc.wantSDP...), "ended c1")
			if got := md.events(); !slices.Equal(got, want2) {
				t.Errorf("media calls\n%q\nwant\n%q", got, want2)
			}
		})
	}
}

// An offer that cannot be anchored never reaches the node half rewritten:
// a new INVITE gets 488 and its relay is freed at once.
func TestMedia_UnanchorableInviteAnswered488(t *testing.T) {
	node, caller := newPeer(t), newPeer(t)
	md := &mediaRec{}
	px, reg := startMediaProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}},
		func(o *Options) { o.Media = md })

	caller.send(px.Addr(), withSDP(invite(caller, "sip:conf1@"+px.Addr(), "r1", "z9hG4bK-r1", 70), badSDP))
	res := caller.recv("SIP/2.0 488")
	checkWarning(t, res)
	if got := node.drain(); len(got) != 0 {
		t.Errorf("node received %d messages for a rejected offer:\n%q", len(got), got)
	}
	waitFor(t, func() bool { return md.has("ended r1") }, "Ended after 488")
	want := []string{"open r1 conf1 endpointIsCaller=true", "sdp r1 fromCaller=true rejected", "ended r1"}
	if got := md.events(); !slices.Equal(got, want) {
		t.Errorf("media calls %q, want %q", got, want)
	}
	if n := len(md.joins()); n != 0 {
		t.Errorf("Joined called %d times for a rejected call", n)
	}
	if v := metricValue(t, reg, "sipedge_sip_sdp_rejected_total", "action", "488"); v != 1 {
		t.Errorf("sdp_rejected{action=488} = %v, want 1", v)
	}
}

// In a dialog, an offer that cannot be anchored is refused with 488 but
// the dialog and its relay live on (RFC 3261 §14.1: the old session stays).
func TestMedia_UnanchorableReofferAnswered488DialogKept(t *testing.T) {
	for _, method := range []string{"INVITE", "UPDATE"} {
		t.Run(method, func(t *testing.T) {
			node, caller := newPeer(t), newPeer(t)
			md := &mediaRec{}
			px, _ := startMediaProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}},
				func(o *Options) { o.Media = md })
			c, n := establish(t, px, caller, node, "re1")

			caller.send(px.Addr(), withSDP(c.request(method, 2, "z9hG4bK-re2"), badSDP))
			res := caller.recv("SIP/2.0 488")
			if cs := header(res, "CSeq"); len(cs) != 1 || cs[0] != "2 "+method {
				t.Errorf("488 CSeq = %q, want 2 %s", cs, method)
			}
			checkWarning(t, res)
			for _, m := range node.drain() {
				if strings.HasPrefix(m, method+" ") {
					t.Errorf("rejected re-offer reached the node:\n%s", m)
				}
			}
			if md.has("ended re1") || px.ActiveDialogs() != 1 {
				t.Fatalf("dialog ended by a refused re-offer (media %q, dialogs %d)", md.events(), px.ActiveDialogs())
			}

			// The dialog still works and ends normally.
			node.send(px.Addr(), n.request("BYE", 1, "z9hG4bK-re3"))
			bye := caller.recv("BYE ")
			caller.send(px.Addr(), answer(bye, 200, "OK", "", caller.addr()))
			node.recv("SIP/2.0 200")
			waitFor(t, func() bool { return md.has("ended re1") }, "Ended after BYE")
		})
	}
}

// A call that fails before it is answered frees its relay and never joins.
func TestMedia_FailedCallFreesMedia(t *testing.T) {
	cases := []struct {
		name string
		// fail ends the call; sentInvite is the INVITE as sent, without its body.
		fail func(t *testing.T, px *Proxy, caller, node *peer, sentInvite, fwd string)
	}{
		{"node busy", func(t *testing.T, px *Proxy, caller, node *peer, _, fwd string) {
			node.send(px.Addr(), answer(fwd, 486, "Busy Here", "node1", node.addr()))
			caller.recv("SIP/2.0 486")
		}},
		{"caller cancels after 180", func(t *testing.T, px *Proxy, caller, node *peer, sentInvite, fwd string) {
			node.send(px.Addr(), answer(fwd, 180, "Ringing", "node1", node.addr()))
			caller.recv("SIP/2.0 180")
			caller.send(px.Addr(), strings.Replace(strings.Replace(sentInvite, "INVITE sip:", "CANCEL sip:", 1),
				"CSeq: 1 INVITE", "CSeq: 1 CANCEL", 1))
			c := node.recv("CANCEL ")
			node.send(px.Addr(), answer(c, 200, "OK", "", node.addr()))
			node.send(px.Addr(), answer(fwd, 487, "Request Terminated", "node1", node.addr()))
			caller.recv("SIP/2.0 487")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			node, caller := newPeer(t), newPeer(t)
			md := &mediaRec{}
			px, _ := startMediaProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}},
				func(o *Options) { o.Media = md })
			inv := invite(caller, "sip:conf1@"+px.Addr(), "f1", "z9hG4bK-f1", 70)
			caller.send(px.Addr(), withSDP(inv, offerSDP))
			fwd := node.recv("INVITE ")
			tc.fail(t, px, caller, node, inv, fwd)
			waitFor(t, func() bool { return md.has("ended f1") }, "Ended after a failed call")
			want := []string{"open f1 conf1 endpointIsCaller=true", "sdp f1 fromCaller=true", "ended f1"}
			if got := md.events(); !slices.Equal(got, want) {
				t.Errorf("media calls %q, want %q", got, want)
			}
			if n := len(md.joins()); n != 0 {
				t.Errorf("Joined called %d times for a failed call", n)
			}
		})
	}
}

// SDP in responses comes from the side the request went to; a response
// cannot be refused, so one that cannot be anchored passes unchanged.
func TestMedia_AnchorsResponses(t *testing.T) {
	t.Run("183 and 200", func(t *testing.T) {
		node, caller := newPeer(t), newPeer(t)
		md := &mediaRec{}
		px, _ := startMediaProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}},
			func(o *Options) { o.Media = md })
		caller.send(px.Addr(), withSDP(invite(caller, "sip:conf1@"+px.Addr(), "p1", "z9hG4bK-p1", 70), offerSDP))
		inv := node.recv("INVITE ")
		node.send(px.Addr(), withSDP(answer(inv, 183, "Session Progress", "node1", node.addr()), answerSDP))
		if got, want := sdpOf(t, caller.recv("SIP/2.0 183")), rewritten(answerSDP, false); got != want {
			t.Errorf("183 body\n%q\nwant\n%q", got, want)
		}
		node.send(px.Addr(), withSDP(answer(inv, 200, "OK", "node1", node.addr()), answerSDP))
		if got, want := sdpOf(t, caller.recv("SIP/2.0 200")), rewritten(answerSDP, false); got != want {
			t.Errorf("200 body\n%q\nwant\n%q", got, want)
		}
	})

	t.Run("200 that cannot be anchored passes unchanged", func(t *testing.T) {
		node, caller := newPeer(t), newPeer(t)
		md := &mediaRec{}
		px, reg := startMediaProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}},
			func(o *Options) { o.Media = md })
		caller.send(px.Addr(), withSDP(invite(caller, "sip:conf1@"+px.Addr(), "p2", "z9hG4bK-p2", 70), offerSDP))
		inv := node.recv("INVITE ")
		node.send(px.Addr(), withSDP(answer(inv, 200, "OK", "node1", node.addr()), badSDP))
		if got := sdpOf(t, caller.recv("SIP/2.0 200")); got != badSDP {
			t.Errorf("200 body\n%q\nwant it unchanged\n%q", got, badSDP)
		}
		if v := metricValue(t, reg, "sipedge_sip_sdp_rejected_total", "action", "passed"); v != 1 {
			t.Errorf("sdp_rejected{action=passed} = %v, want 1", v)
		}
		waitFor(t, func() bool { return len(md.joins()) == 1 }, "Joined: the call is still answered")
	})

	t.Run("re-INVITE from the node", func(t *testing.T) {
		node, caller := newPeer(t), newPeer(t)
		md := &mediaRec{}
		px, _ := startMediaProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}},
			func(o *Options) { o.Media = md })
		_, n := establish(t, px, caller, node, "p3")
		before := len(md.events())

		node.send(px.Addr(), withSDP(n.request("INVITE", 1, "z9hG4bK-p3"), offerSDP))
		reinv := caller.recv("INVITE ")
		if got, want := sdpOf(t, reinv), rewritten(offerSDP, false); got != want {
			t.Errorf("caller got re-INVITE body\n%q\nwant\n%q", got, want)
		}
		caller.send(px.Addr(), withSDP(answer(reinv, 200, "OK", "", caller.addr()), answerSDP))
		if got, want := sdpOf(t, node.recv("SIP/2.0 200")), rewritten(answerSDP, true); got != want {
			t.Errorf("node got 200 body\n%q\nwant\n%q", got, want)
		}
		want := []string{"sdp p3 fromCaller=false", "sdp p3 fromCaller=true"}
		if got := md.events()[before:]; !slices.Equal(got, want) {
			t.Errorf("media calls for the re-INVITE %q, want %q", got, want)
		}
	})
}

// SPEC §5: X-Sipedge-* headers count only from media nodes and trusted
// networks; from anyone else they are stripped.
func TestMedia_TrustedHeaders(t *testing.T) {
	cases := []struct {
		name         string
		trust        func(caller, other *peer) TrustFunc
		headers      []string
		sign         string // node secret the caller signs with ("": unsigned)
		wantAtNode   []string
		wantJoin     media.Join
		wantStripped float64
		wantAuthFail string // reason counted in node_auth_failures
	}{
		{
			name:     "untrusted source: stripped",
			trust:    func(_, _ *peer) TrustFunc { return nil },
			headers:  []string{"X-Sipedge-Role: host", "X-Sipedge-Participant: admin", "X-Sipedge-Keep-Alive: yes"},
			wantJoin: media.Join{CallID: "t1", ConfID: "conf1", AOR: "alice@example.com"}, wantStripped: 3,
		},
		{
			name:     "untrusted source with a valid proof: stripped",
			trust:    func(_, _ *peer) TrustFunc { return nil },
			headers:  []string{"X-Sipedge-Role: host"},
			sign:     testNodeSecret,
			wantJoin: media.Join{CallID: "t1", ConfID: "conf1", AOR: "alice@example.com"}, wantStripped: 2,
		},
		{
			// Issue 8 item 4: over UDP the address is no proof (a raw
			// socket forges it).
			name:     "trusted network over UDP without proof: stripped",
			trust:    func(caller, _ *peer) TrustFunc { return trustOnly(caller, "") },
			headers:  []string{"X-Sipedge-Role: host", "X-Sipedge-Participant: admin"},
			wantJoin: media.Join{CallID: "t1", ConfID: "conf1", AOR: "alice@example.com"}, wantStripped: 2,
			wantAuthFail: "missing",
		},
		{
			name:     "trusted network, proof with another secret: stripped",
			trust:    func(caller, _ *peer) TrustFunc { return trustOnly(caller, "") },
			headers:  []string{"X-Sipedge-Role: host"},
			sign:     "guessed",
			wantJoin: media.Join{CallID: "t1", ConfID: "conf1", AOR: "alice@example.com"}, wantStripped: 2,
			wantAuthFail: "bad_mac",
		},
		{
			name:     "another port of a trusted host: stripped",
			trust:    func(_, other *peer) TrustFunc { return trustOnly(other, "") },
			headers:  []string{"X-Sipedge-Role: host", "X-Sipedge-Participant: admin"},
			wantJoin: media.Join{CallID: "t1", ConfID: "conf1", AOR: "alice@example.com"}, wantStripped: 2,
		},
		{
			name:     "untrusted source, header names in another case: stripped",
			trust:    func(_, _ *peer) TrustFunc { return nil },
			headers:  []string{"x-sipedge-role: host", "X-SIPEDGE-PARTICIPANT: admin"},
			wantJoin: media.Join{CallID: "t1", ConfID: "conf1", AOR: "alice@example.com"}, wantStripped: 2,
		},
		{
			name:       "trusted network with proof: kept and joined with them",
			trust:      func(caller, _ *peer) TrustFunc { return trustOnly(caller, "") },
			headers:    []string{"X-Sipedge-Role: host", "X-Sipedge-Participant: admin", "X-Sipedge-Keep-Alive: no"},
			sign:       testNodeSecret,
			wantAtNode: []string{"X-Sipedge-Role: host", "X-Sipedge-Participant: admin", "X-Sipedge-Keep-Alive: no"},
			wantJoin: media.Join{CallID: "t1", ConfID: "conf1", AOR: "alice@example.com",
				Role: "host", Kind: "admin", KeepAlive: "no"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			node, caller, other := newPeer(t), newPeer(t), newPeer(t)
			md := &mediaRec{}
			px, reg := startMediaProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}},
				func(o *Options) { o.Media, o.Trust = md, tc.trust(caller, other) })

			msg := withHeaders(withSDP(invite(caller, "sip:conf1@"+px.Addr(), "t1", "z9hG4bK-t1", 70), offerSDP), tc.headers...)
			if tc.sign != "" {
				msg = signedBy(t, msg, tc.sign, time.Now())
			}
			caller.send(px.Addr(), msg)
			inv := node.recv("INVITE ")
			if got := xSipedge(inv); !slices.Equal(got, tc.wantAtNode) {
				t.Errorf("node got X-Sipedge headers %q, want %q", got, tc.wantAtNode)
			}
			node.send(px.Addr(), withSDP(answer(inv, 200, "OK", "node1", node.addr()), answerSDP))
			caller.recv("SIP/2.0 200")
			waitFor(t, func() bool { return len(md.joins()) > 0 }, "Joined")
			if j := md.joins(); j[0] != tc.wantJoin {
				t.Errorf("Joined %+v, want %+v", j[0], tc.wantJoin)
			}
			if v := metricValue(t, reg, "sipedge_sip_trusted_headers_stripped_total"); v != tc.wantStripped {
				t.Errorf("trusted_headers_stripped = %v, want %v", v, tc.wantStripped)
			}
			if tc.wantAuthFail != "" {
				if v := metricValue(t, reg, "sipedge_sip_node_auth_failures_total", "reason", tc.wantAuthFail); v != 1 {
					t.Errorf("node_auth_failures{reason=%s} = %v, want 1", tc.wantAuthFail, v)
				}
			}
		})
	}
}

// A media node places a call into its own conference (adp, or `sipedgectl
// conf dial`): it goes straight to the callee, not through admission.
func TestMedia_NodeCallGoesToCallee(t *testing.T) {
	cases := []struct {
		name     string
		headers  []string
		wantJoin media.Join
	}{
		{"kind adp by default", []string{"X-Sipedge-Role: guest"},
			media.Join{Role: "guest", Kind: "adp"}},
		{"kind and keep-alive from the headers", []string{"X-Sipedge-Participant: admin", "X-Sipedge-Keep-Alive: no"},
			media.Join{Kind: "admin", KeepAlive: "no"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mediaNode, callee, ringNode := newPeer(t), newPeer(t), newPeer(t)
			md := &mediaRec{}
			adm := &fakeAdmitter{node: ring.Node{Name: "ring1", Addr: ringNode.addr()}}
			px, _ := startMediaProxy(t, adm, func(o *Options) { o.Media, o.Trust = md, trustOnly(mediaNode, "n1") })

			mediaNode.send(px.Addr(), signedBy(t, nodeInvite(mediaNode, px, "sip:callee@"+callee.addr(), "nc1", tc.headers...),
				testNodeSecret, time.Now()))
			inv := callee.recv("INVITE ")
			if !strings.HasPrefix(inv, "INVITE sip:callee@"+callee.addr()+" ") {
				t.Errorf("Request-URI changed:\n%s", inv)
			}
			if h := xSipedge(inv); len(h) != 0 {
				t.Errorf("callee got X-Sipedge headers %q", h)
			}
			if r := header(inv, "Route"); len(r) != 0 {
				t.Errorf("callee got Route %q, want sipedge's own removed", r)
			}
			rr := header(inv, "Record-Route")
			if len(rr) != 1 || !strings.Contains(rr[0], routeParam+"=") {
				t.Fatalf("Record-Route = %q", rr)
			}
			if got, want := sdpOf(t, inv), rewritten(offerSDP, true); got != want {
				t.Errorf("callee got body\n%q\nwant\n%q", got, want)
			}
			if got := ringNode.drain(); len(got) != 0 {
				t.Errorf("ring node got %q", got)
			}

			callee.send(px.Addr(), withSDP(answer(inv, 200, "OK", "callee1", callee.addr()), answerSDP))
			if got, want := sdpOf(t, mediaNode.recv("SIP/2.0 200")), rewritten(answerSDP, false); got != want {
				t.Errorf("node got 200 body\n%q\nwant\n%q", got, want)
			}
			waitFor(t, func() bool { return len(md.joins()) > 0 }, "Joined")
			want := tc.wantJoin
			want.CallID, want.ConfID, want.AOR = "nc1", "c1", "callee@127.0.0.1"
			if j := md.joins(); len(j) != 1 || j[0] != want {
				t.Errorf("Joined %+v, want once %+v", j, want)
			}
			if ev := md.events(); len(ev) == 0 || ev[0] != "open nc1 c1 endpointIsCaller=false" {
				t.Errorf("media calls %q, want Open with endpointIsCaller=false first", ev)
			}

			// The callee hangs up: its BYE goes back to the node.
			bye := fmt.Sprintf(`BYE sip:c1@%s SIP/2.0
Via: SIP/2.0/UDP %s;branch=z9hG4bK-ncb;rport
Max-Forwards: 70
Route: %s
From: <sip:callee@%s>;tag=callee1
To: <sip:c1@sipedge.test>;tag=nodeA
Call-ID: nc1
CSeq: 1 BYE
Content-Length: 0

`, mediaNode.addr(), callee.addr(), rr[0], callee.addr())
			callee.send(px.Addr(), bye)
			nbye := mediaNode.recv("BYE ")
			mediaNode.send(px.Addr(), answer(nbye, 200, "OK", "", mediaNode.addr()))
			callee.recv("SIP/2.0 200")
			waitFor(t, func() bool { return md.has("ended nc1") }, "Ended after BYE")
			for _, ev := range adm.events() {
				if strings.HasPrefix(ev, "admit") {
					t.Errorf("admission asked about a node call: %q", ev)
				}
			}
		})
	}
}

// Issue 8 item 4: a node call (an INVITE with X-Sipedge-Conference) not
// proven to come from a media node gets 403 and sipedge sends nothing on:
// neither to the Request-URI nor to a ring node. Over UDP the node's exact
// address is no proof: a raw socket forges it.
func TestMedia_NodeCallWithoutProofRefused(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name       string
		fromNode   bool   // sent from the node's exact address
		secret     string // signing secret ("": unsigned)
		signedAt   time.Time
		wantReason string // node_calls_refused reason
		wantAuth   string // node_auth_failures reason ("": none counted)
	}{
		{"untrusted source, unsigned", false, "", now, "unproven", ""},
		{"untrusted source, validly signed", false, testNodeSecret, now, "unproven", ""},
		{"node's address over UDP, unsigned (spoofed)", true, "", now, "unproven", "missing"},
		{"node's address, other secret", true, "guessed", now, "unproven", "bad_mac"},
		{"node's address, proof too old (replayed)", true, testNodeSecret, now.Add(-31 * time.Second), "unproven", "expired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sender, callee, ringNode := newPeer(t), newPeer(t), newPeer(t)
			trusted := callee // someone else
			if tc.fromNode {
				trusted = sender
			}
			md := &mediaRec{}
			adm := &fakeAdmitter{node: ring.Node{Name: "ring1", Addr: ringNode.addr()}}
			px, reg := startMediaProxy(t, adm, func(o *Options) { o.Media, o.Trust = md, trustOnly(trusted, "n1") })

			msg := nodeInvite(sender, px, "sip:callee@"+callee.addr(), "u1", "X-Sipedge-Role: host")
			if tc.secret != "" {
				msg = signedBy(t, msg, tc.secret, tc.signedAt)
			}
			sender.send(px.Addr(), msg)
			sender.recv("SIP/2.0 403")
			for who, p := range map[string]*peer{"callee": callee, "ring node": ringNode} {
				if got := p.drain(); len(got) != 0 {
					t.Errorf("%s got %q", who, got)
				}
			}
			if ev := adm.events(); len(ev) != 0 {
				t.Errorf("admitter events %q, want none", ev)
			}
			if ev := md.events(); len(ev) != 0 {
				t.Errorf("media calls %q, want none", ev)
			}
			if v := metricValue(t, reg, "sipedge_sip_node_calls_refused_total", "reason", tc.wantReason); v != 1 {
				t.Errorf("node_calls_refused{reason=%s} = %v, want 1", tc.wantReason, v)
			}
			if tc.wantAuth != "" {
				if v := metricValue(t, reg, "sipedge_sip_node_auth_failures_total", "reason", tc.wantAuth); v != 1 {
					t.Errorf("node_auth_failures{reason=%s} = %v, want 1", tc.wantAuth, v)
				}
			}
		})
	}
}

// Over TCP the connection is the proof: a node's exact address on a TCP
// connection needs no X-Sipedge-Auth (the handshake cannot be completed
// from a forged address), but a wrong proof is still refused.
func TestMedia_NodeCallOverTCP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secret string
		want   string
	}{
		{"unsigned", "", "INVITE "},
		{"wrong proof", "guessed", "SIP/2.0 403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			callee, ringNode := newPeer(t), newPeer(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0") // reserve a local port for the node's TCP side
			if err != nil {
				t.Fatal(err)
			}
			local := ln.Addr().(*net.TCPAddr)
			ln.Close()
			nodeAddr := netip.MustParseAddrPort(local.String())
			md := &mediaRec{}
			adm := &fakeAdmitter{node: ring.Node{Name: "ring1", Addr: ringNode.addr()}}
			px, _ := startMediaProxy(t, adm, func(o *Options) {
				o.Media = md
				o.Trust = func(src netip.AddrPort) (string, bool) { return "n1", src == nodeAddr }
			})
			conn, err := (&net.Dialer{LocalAddr: local}).Dial("tcp", px.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			msg := strings.Replace(nodeInvite(&peer{t: t, conn: callee.conn}, px, "sip:callee@"+callee.addr(), "tc1"),
				"SIP/2.0/UDP "+callee.addr(), "SIP/2.0/TCP "+local.String(), 1)
			if tc.secret != "" {
				msg = signedBy(t, msg, tc.secret, time.Now())
			}
			msg = strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")
			if _, err := conn.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			if tc.want == "INVITE " {
				callee.recv("INVITE ")
				return
			}
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 4096)
			got := ""
			for !strings.Contains(got, tc.want) {
				n, err := conn.Read(buf)
				if err != nil {
					t.Fatalf("waiting for %q on TCP: %v (got %q)", tc.want, err, got)
				}
				got += string(buf[:n])
			}
			if d := callee.drain(); len(d) != 0 {
				t.Errorf("callee got %q", d)
			}
		})
	}
}

// A genuine signed node call captured and replayed (on a new transaction,
// from the node's forged address) while its timestamp is still valid is
// refused: each proof is accepted once.
func TestMedia_NodeCallReplayRefused(t *testing.T) {
	mediaNode, callee := newPeer(t), newPeer(t)
	md := &mediaRec{}
	px, reg := startMediaProxy(t, &fakeAdmitter{}, func(o *Options) { o.Media, o.Trust = md, trustOnly(mediaNode, "n1") })
	msg := signedBy(t, nodeInvite(mediaNode, px, "sip:callee@"+callee.addr(), "rp1"), testNodeSecret, time.Now())
	mediaNode.send(px.Addr(), msg)
	inv := callee.recv("INVITE ")
	callee.send(px.Addr(), answer(inv, 486, "Busy Here", "callee1", callee.addr()))
	mediaNode.recv("SIP/2.0 486")
	callee.drain()
	opens := len(md.events())

	mediaNode.send(px.Addr(), strings.Replace(msg, "branch=z9hG4bK-rp1", "branch=z9hG4bK-rp1-again", 1))
	mediaNode.recv("SIP/2.0 403")
	for _, m := range callee.drain() {
		if strings.HasPrefix(m, "INVITE ") {
			t.Errorf("the replay reached the callee:\n%s", m)
		}
	}
	if ev := md.events()[opens:]; len(ev) != 0 {
		t.Errorf("media calls for the replay %q, want none", ev)
	}
	if v := metricValue(t, reg, "sipedge_sip_node_auth_failures_total", "reason", "replayed"); v != 1 {
		t.Errorf("node_auth_failures{reason=replayed} = %v, want 1", v)
	}
}

// testNodeSecret is the node secret of the test proxies.
const testNodeSecret = "test-node-secret"

// signedBy adds the X-Sipedge-Auth a node holding secret writes at time at.
func signedBy(t *testing.T, msg, secret string, at time.Time) string {
	t.Helper()
	raw := strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")
	m, err := newParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatalf("parse to sign: %v", err)
	}
	req := m.(*sip.Request)
	nodeauth.Sign(req, secret, at)
	return withHeaders(msg, hdrAuth+": "+req.GetHeader(hdrAuth).Value())
}

// SPEC §5: X-Sipedge-* headers "from anyone else are stripped" — that
// includes the answer of an endpoint a node called.
func TestMedia_UntrustedResponseHeadersStripped(t *testing.T) {
	mediaNode, callee := newPeer(t), newPeer(t)
	px, _ := startMediaProxy(t, &fakeAdmitter{}, func(o *Options) { o.Media, o.Trust = &mediaRec{}, trustOnly(mediaNode, "n1") })
	mediaNode.send(px.Addr(), signedBy(t, nodeInvite(mediaNode, px, "sip:callee@"+callee.addr(), "rs1"), testNodeSecret, time.Now()))
	inv := callee.recv("INVITE ")
	callee.send(px.Addr(), withHeaders(withSDP(answer(inv, 200, "OK", "callee1", callee.addr()), answerSDP),
		"X-Sipedge-Role: host", "X-Sipedge-Keep-Alive: yes"))
	if h := xSipedge(mediaNode.recv("SIP/2.0 200")); len(h) != 0 {
		t.Errorf("node got X-Sipedge headers from the callee's answer: %q", h)
	}
}

// sipedge resolves nothing a message names, and only media nodes place
// calls into conferences.
func TestMedia_NodeCallRefused(t *testing.T) {
	cases := []struct {
		name   string
		target func(callee *peer) string
		node   string // what TrustFunc says the sender is
	}{
		{"target is a hostname", func(*peer) string { return "sip:callee@callee.example.com" }, "n1"},
		{"trusted network that is no node", func(c *peer) string { return "sip:callee@" + c.addr() }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sender, callee, ringNode := newPeer(t), newPeer(t), newPeer(t)
			md := &mediaRec{}
			adm := &fakeAdmitter{node: ring.Node{Name: "ring1", Addr: ringNode.addr()}}
			px, _ := startMediaProxy(t, adm, func(o *Options) { o.Media, o.Trust = md, trustOnly(sender, tc.node) })

			sender.send(px.Addr(), signedBy(t, nodeInvite(sender, px, tc.target(callee), "x1"), testNodeSecret, time.Now()))
			sender.recv("SIP/2.0 403")
			for who, p := range map[string]*peer{"callee": callee, "ring node": ringNode} {
				if got := p.drain(); len(got) != 0 {
					t.Errorf("%s got %q", who, got)
				}
			}
			if ev := adm.events(); len(ev) != 0 {
				t.Errorf("admitter events %q, want none", ev)
			}
			if ev := md.events(); len(ev) != 0 {
				t.Errorf("media calls %q, want none", ev)
			}
		})
	}
}

// With anchoring off, bodies pass untouched.
func TestMedia_OffLeavesBodiesUntouched(t *testing.T) {
	node, caller := newPeer(t), newPeer(t)
	px := startProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}})
	caller.send(px.Addr(), withSDP(invite(caller, "sip:conf1@"+px.Addr(), "o1", "z9hG4bK-o1", 70), offerSDP))
	inv := node.recv("INVITE ")
	if got := sdpOf(t, inv); got != offerSDP {
		t.Errorf("node got INVITE body\n%q\nwant it unchanged", got)
	}
	node.send(px.Addr(), withSDP(answer(inv, 200, "OK", "node1", node.addr()), answerSDP))
	if got := sdpOf(t, caller.recv("SIP/2.0 200")); got != answerSDP {
		t.Errorf("caller got 200 body\n%q\nwant it unchanged", got)
	}
}

// --- helpers ---

// mediaRec is a Media that records its calls and rewrites SDP in a way a
// test can predict (rewritten); a body containing "BAD" cannot be anchored.
type mediaRec struct {
	mu    sync.Mutex
	log   []string // "open <id> <conf> endpointIsCaller=<b>", "sdp <id> fromCaller=<b>[ rejected]", "ended <id>"
	joind []media.Join
}

var _ Media = (*mediaRec)(nil)

func (m *mediaRec) Open(callID, confID string, endpointIsCaller bool) {
	m.record(fmt.Sprintf("open %s %s endpointIsCaller=%t", callID, confID, endpointIsCaller))
}

func (m *mediaRec) SDP(callID string, fromCaller bool, body []byte) ([]byte, error) {
	ev := fmt.Sprintf("sdp %s fromCaller=%t", callID, fromCaller)
	if strings.Contains(string(body), "BAD") {
		m.record(ev + " rejected")
		return nil, fmt.Errorf(`m=video "BAD" has no relay`)
	}
	m.record(ev)
	return []byte(rewritten(string(body), fromCaller)), nil
}

func (m *mediaRec) Joined(_ context.Context, j media.Join) {
	m.mu.Lock()
	m.joind = append(m.joind, j)
	m.mu.Unlock()
}

func (m *mediaRec) Ended(callID string) { m.record("ended " + callID) }

func (m *mediaRec) record(ev string) {
	m.mu.Lock()
	m.log = append(m.log, ev)
	m.mu.Unlock()
}

func (m *mediaRec) events() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.log)
}

func (m *mediaRec) joins() []media.Join {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.joind)
}

func (m *mediaRec) has(ev string) bool { return slices.Contains(m.events(), ev) }

const relayIP = "198.51.100.1"

// rewritten is what mediaRec makes of body: connection address moved to
// the relay and the direction it was told, so tests see both.
func rewritten(body string, fromCaller bool) string {
	if body == "" {
		return ""
	}
	return strings.ReplaceAll(body, "c=IN IP4 127.0.0.1", "c=IN IP4 "+relayIP) +
		"a=x-anchored:fromCaller=" + strconv.FormatBool(fromCaller) + "\r\n"
}

var (
	offerSDP  = sdp("alice", "40000")
	answerSDP = sdp("node", "50000")
	badSDP    = sdp("BAD", "60000")
)

func sdp(user, port string) string {
	return "v=0\r\no=" + user + " 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio " + port + " RTP/AVP 0\r\n"
}

// startMediaProxy is startProxy with options set by the test; it returns
// the registry holding the proxy's metrics.
func startMediaProxy(t *testing.T, adm Admitter, set func(*Options)) (*Proxy, *prometheus.Registry) {
	t.Helper()
	opts := Options{Listen: "127.0.0.1:0", RouteSecret: "test-secret", UserAgent: "sipedge-test",
		NodeSecrets: []string{testNodeSecret}}
	set(&opts)
	reg := prometheus.NewRegistry()
	px, err := New(opts, adm, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, px)
	return px, reg
}

// trustOnly trusts exactly p's address (IP and port) as node.
func trustOnly(p *peer, node string) TrustFunc {
	want := netip.MustParseAddrPort(p.addr())
	return func(src netip.AddrPort) (string, bool) {
		if src == want {
			return node, true
		}
		return "", false
	}
}

// withSDP puts body into msg (built with Content-Length: 0) as application/sdp.
func withSDP(msg, body string) string {
	if body == "" {
		return msg
	}
	return strings.Replace(msg, "Content-Length: 0",
		"Content-Type: application/sdp\r\nContent-Length: "+strconv.Itoa(len(body)), 1) + body
}

// withHeaders inserts header lines just before Content-Type or Content-Length.
func withHeaders(msg string, lines ...string) string {
	at := strings.Index(msg, "Content-Type:")
	if at < 0 {
		at = strings.Index(msg, "Content-Length:")
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	return msg[:at] + b.String() + msg[at:]
}

// sdpOf returns msg's body after checking its Content-Length (and its
// Content-Type when there is one).
func sdpOf(t *testing.T, msg string) string {
	t.Helper()
	i := strings.Index(msg, "\r\n\r\n")
	if i < 0 {
		t.Fatalf("no end of headers:\n%s", msg)
	}
	body := msg[i+4:]
	if cl := header(msg, "Content-Length"); len(cl) != 1 || cl[0] != strconv.Itoa(len(body)) {
		t.Errorf("Content-Length %q, body has %d bytes:\n%s", cl, len(body), msg)
	}
	if body != "" {
		if ct := header(msg, "Content-Type"); len(ct) != 1 || ct[0] != "application/sdp" {
			t.Errorf("Content-Type %q", ct)
		}
	}
	return body
}

var warningRe = regexp.MustCompile(`^399 sipedge "[^"]*BAD[^"]*"$`)

// checkWarning checks the Warning header of a 488 (RFC 3261 §20.43).
func checkWarning(t *testing.T, res string) {
	t.Helper()
	if w := header(res, "Warning"); len(w) != 1 || !warningRe.MatchString(w[0]) {
		t.Errorf("Warning = %q, want one `399 sipedge \"...\"` naming the cause", w)
	}
}

// xSipedge lists msg's X-Sipedge-* header lines, whatever their case.
func xSipedge(msg string) []string {
	var out []string
	for _, line := range strings.Split(msg, "\r\n") {
		if strings.HasPrefix(strings.ToLower(line), "x-sipedge-") {
			out = append(out, line)
		}
	}
	return out
}

// dialogSide is one party of an established dialog: enough to send
// in-dialog requests through sipedge's Record-Route.
type dialogSide struct {
	peer     *peer
	ruri     string // the other party's Contact
	route    string // sipedge's Record-Route
	from, to string // header values with tags
	callID   string
}

func (d dialogSide) request(method string, cseq int, branch string) string {
	return fmt.Sprintf(`%s %s SIP/2.0
Via: SIP/2.0/UDP %s;branch=%s;rport
Max-Forwards: 70
Route: %s
From: %s
To: %s
Call-ID: %s
CSeq: %d %s
Contact: <sip:%s>
Content-Length: 0

`, method, d.ruri, d.peer.addr(), branch, d.route, d.from, d.to, d.callID, cseq, method, d.peer.addr())
}

// callerSide is the caller of a call made with invite() and answered by
// node with To tag node1.
func callerSide(caller, node *peer, callID, route string) dialogSide {
	return dialogSide{peer: caller, ruri: "sip:conf1@" + node.addr(), route: route,
		from: "<sip:alice@example.com>;tag=caller1", to: "<sip:conf1@example.com>;tag=node1", callID: callID}
}

// establish sets up an anchored call from caller to node (INVITE, 200,
// ACK) and returns both sides of its dialog.
func establish(t *testing.T, px *Proxy, caller, node *peer, callID string) (c, n dialogSide) {
	t.Helper()
	caller.send(px.Addr(), withSDP(invite(caller, "sip:conf1@"+px.Addr(), callID, "z9hG4bK-"+callID, 70), offerSDP))
	inv := node.recv("INVITE ")
	node.send(px.Addr(), withSDP(answer(inv, 200, "OK", "node1", node.addr()), answerSDP))
	ok := caller.recv("SIP/2.0 200")
	c = callerSide(caller, node, callID, header(ok, "Record-Route")[0])
	caller.send(px.Addr(), c.request("ACK", 1, "z9hG4bK-ack-"+callID))
	node.recv("ACK ")
	waitFor(t, func() bool { return px.ActiveDialogs() == 1 }, "dialog established")
	n = dialogSide{peer: node, ruri: "sip:alice@" + caller.addr(), route: header(inv, "Record-Route")[0],
		from: "<sip:conf1@example.com>;tag=node1", to: "<sip:alice@example.com>;tag=caller1", callID: callID}
	return c, n
}

// nodeInvite is an INVITE a media node sends for conference c1 through
// sipedge as its outbound proxy (a preloaded Route naming sipedge).
func nodeInvite(node *peer, px *Proxy, target, callID string, headers ...string) string {
	msg := fmt.Sprintf(`INVITE %s SIP/2.0
Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s;rport
Max-Forwards: 70
Route: <sip:%s;lr>
From: <sip:c1@sipedge.test>;tag=nodeA
To: <%s>
Call-ID: %s
CSeq: 1 INVITE
Contact: <sip:c1@%s>
X-Sipedge-Conference: c1
Content-Length: 0

`, target, node.addr(), callID, px.Addr(), target, callID, node.addr())
	return withHeaders(withSDP(msg, offerSDP), headers...)
}

// metricValue is the value of the counter name whose labels include the
// given name/value pairs (0 when it was never counted).
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// A new call that never reaches its node (TCP connect refused, before any
// transaction exists) frees its media too.
func TestMedia_UnreachableNodeFreesMedia(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now: connect is refused
	caller := newPeer(t)
	md := &mediaRec{}
	px, _ := startMediaProxy(t, &fakeAdmitter{node: ring.Node{Name: "n1", Addr: dead, Transport: "tcp"}},
		func(o *Options) { o.Media = md })
	caller.send(px.Addr(), withSDP(invite(caller, "sip:conf1@"+px.Addr(), "u1", "z9hG4bK-u1", 70), offerSDP))
	caller.recv("SIP/2.0 503")
	waitFor(t, func() bool { return md.has("ended u1") }, "Ended after an unreachable node")
}
