package media

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/media/policy"
	"github.com/sipedge/sipedge/media/relay"
	"github.com/sipedge/sipedge/media/sdpx"
)

// SPEC §5: SDP of every leg is rewritten so RTP flows through the relay;
// re-INVITEs keep the ports; ports are freed when the dialog ends.
func TestSDP(t *testing.T) {
	t.Run("caller offer is rewritten to the B-facing relay, node answer to the A-facing one", func(t *testing.T) {
		in := newEnv(t).instance("A")
		ep, node := newParty(t), newParty(t)
		in.mg.Open("call-1", "conf-1", true)

		offer := in.sdp(t, "call-1", true, audioSDP(ep.addr(), 1))
		answer := in.sdp(t, "call-1", false, audioSDP(node.addr(), 1))

		rs := in.stream(t, "call-1", 0)
		aRTP, aRTCP := rs.LocalA()
		bRTP, bRTCP := rs.LocalB()
		checkRelay(t, "offer forwarded to the node", offer, bRTP, bRTCP)
		checkRelay(t, "answer forwarded to the endpoint", answer, aRTP, aRTCP)

		// RTP follows the rewritten SDP through the relay, both ways.
		pkt := rtpPacket(t, 0xA, 1)
		ep.send(t, aRTP, pkt)
		node.expect(t, pkt)
		pkt = rtpPacket(t, 0xB, 1)
		node.send(t, bRTP, pkt)
		ep.expect(t, pkt)
	})

	t.Run("a re-INVITE keeps the ports", func(t *testing.T) {
		in := newEnv(t).instance("A")
		ep, node := newParty(t), newParty(t)
		in.mg.Open("call-1", "conf-1", true)
		offer := in.sdp(t, "call-1", true, audioSDP(ep.addr(), 1))
		answer := in.sdp(t, "call-1", false, audioSDP(node.addr(), 1))
		ports := in.mg.InUse()

		reoffer := in.sdp(t, "call-1", true, audioSDP(ep.addr(), 2))
		reanswer := in.sdp(t, "call-1", false, audioSDP(node.addr(), 2))

		if got, want := relayRTP(t, reoffer, 0), relayRTP(t, offer, 0); got != want {
			t.Errorf("re-offer points the node at %v, the offer did at %v", got, want)
		}
		if got, want := relayRTP(t, reanswer, 0), relayRTP(t, answer, 0); got != want {
			t.Errorf("re-answer points the endpoint at %v, the answer did at %v", got, want)
		}
		if ports != 4 || in.mg.InUse() != ports {
			t.Errorf("ports in use: %d after the call set up, %d after the re-INVITE; want 4 both", ports, in.mg.InUse())
		}
	})

	t.Run("unparsable SDP is an error and opens no port", func(t *testing.T) {
		for _, tc := range []struct{ name, body string }{
			{"not SDP at all", "hello, world"},
			{"empty body", ""},
			{"stream without a connection address", "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				in := newEnv(t).instance("A")
				in.mg.Open("call-1", "conf-1", true)
				out, err := in.mg.SDP("call-1", true, []byte(tc.body))
				if !errors.Is(err, sdpx.ErrUnparsable) {
					t.Fatalf("SDP() error = %v, want %v", err, sdpx.ErrUnparsable)
				}
				if out != nil {
					t.Errorf("SDP() returned a body to forward: %q", out)
				}
				if n := in.mg.InUse(); n != 0 {
					t.Errorf("ports in use = %d, want 0", n)
				}
				if n := testutil.ToFloat64(in.mg.m.sdpErrors.WithLabelValues("unparsable")); n != 1 {
					t.Errorf("sipedge_media_sdp_errors_total{class=unparsable} = %v, want 1", n)
				}
			})
		}
	})

	t.Run("Ended frees every port of the call", func(t *testing.T) {
		in := newEnv(t).instance("A")
		ep, node := newParty(t), newParty(t)
		in.mg.Open("call-1", "conf-1", true)
		in.sdp(t, "call-1", true, audioVideoSDP(ep.addr(), 1))
		in.sdp(t, "call-1", false, audioVideoSDP(node.addr(), 1))
		if n := in.mg.InUse(); n != 8 {
			t.Fatalf("ports in use for audio+video = %d, want 8", n)
		}

		in.mg.Ended("call-1")
		in.mg.Ended("call-1") // a retransmitted BYE
		if n := in.mg.InUse(); n != 0 {
			t.Errorf("ports in use after Ended = %d, want 0", n)
		}
		if n := in.mg.Sessions(); n != 0 {
			t.Errorf("sessions after Ended = %d, want 0", n)
		}
	})

	t.Run("1000 open, SDP, Ended cycles leave no port in use", func(t *testing.T) {
		in := newEnv(t).instance("A")
		offer := audioSDP(netip.MustParseAddrPort("192.0.2.10:4000"), 1)
		answer := audioSDP(netip.MustParseAddrPort("198.51.100.20:5000"), 1)
		for i := range 1000 {
			id := "call-" + strconv.Itoa(i)
			in.mg.Open(id, "conf-1", true)
			in.sdp(t, id, true, offer)
			in.sdp(t, id, false, answer)
			in.mg.Ended(id)
		}
		if n := in.mg.InUse(); n != 0 {
			t.Errorf("ports in use = %d, want 0", n)
		}
		if n := in.mg.Sessions(); n != 0 {
			t.Errorf("sessions = %d, want 0", n)
		}
	})

	t.Run("a node-placed call has the callee's SDP as side A", func(t *testing.T) {
		in := newEnv(t).instance("A")
		ep, node := newParty(t), newParty(t) // ep is the callee: the participant's endpoint
		in.mg.Open("call-1", "conf-1", false)

		offer := in.sdp(t, "call-1", true, audioSDP(node.addr(), 1))
		answer := in.sdp(t, "call-1", false, audioSDP(ep.addr(), 1))

		rs := in.stream(t, "call-1", 0)
		aRTP, aRTCP := rs.LocalA()
		bRTP, bRTCP := rs.LocalB()
		checkRelay(t, "node's offer forwarded to the endpoint", offer, aRTP, aRTCP)
		checkRelay(t, "endpoint's answer forwarded to the node", answer, bRTP, bRTCP)

		// What the callee sends is the endpoint's RTP; the node's is not.
		ep.send(t, aRTP, rtpPacket(t, 0xA, 1))
		eventually(t, "callee RTP counted as the endpoint's", func() bool { return in.endpointPackets("call-1") == 1 })
		pkt := rtpPacket(t, 0xB, 1)
		node.send(t, bRTP, pkt)
		ep.expect(t, pkt)
		if n := in.endpointPackets("call-1"); n != 1 {
			t.Errorf("endpoint packets after node RTP = %d, want 1", n)
		}
	})

	t.Run("SDP of a call this instance never saw is anchored", func(t *testing.T) {
		in := newEnv(t).instance("A")
		in.sdp(t, "call-1", true, audioSDP(netip.MustParseAddrPort("192.0.2.10:4000"), 3))
		if in.mg.Sessions() != 1 || in.mg.InUse() != 4 {
			t.Errorf("sessions = %d, ports = %d; want 1 and 4", in.mg.Sessions(), in.mg.InUse())
		}
	})
}

// SPEC §5: role from the conference's hosts list (no list: everyone is a
// Host); trusted headers may set role, kind and keep-alive.
func TestJoined(t *testing.T) {
	t.Run("role, kind and keep-alive", func(t *testing.T) {
		tests := []struct {
			name     string
			hosts    string // sipedge:confcfg:<id> hosts; "" = no field
			join     Join
			want     [3]string // role, kind, keep_alive
			wantWarn int
		}{
			{"AOR on the hosts list joins as Host", "alice@example.com,bob@example.com",
				Join{AOR: "bob@example.com"}, [3]string{"host", "normal", "yes"}, 0},
			{"AOR not on the hosts list joins as Guest", "alice@example.com,bob@example.com",
				Join{AOR: "carol@example.com"}, [3]string{"guest", "normal", "yes"}, 0},
			{"no hosts list: everyone is a Host", "",
				Join{AOR: "carol@example.com"}, [3]string{"host", "normal", "yes"}, 0},
			{"blank hosts list: everyone is a Host", "  ",
				Join{AOR: "carol@example.com"}, [3]string{"host", "normal", "yes"}, 0},
			{"hosts list compared case-insensitively", " Alice@Example.COM ",
				Join{AOR: "alice@example.com"}, [3]string{"host", "normal", "yes"}, 0},
			{"sip: and sips: prefixes tolerated in the list", "sip:alice@example.com, sips:bob@example.com",
				Join{AOR: "bob@example.com"}, [3]string{"host", "normal", "yes"}, 0},
			{"sip: prefix tolerated in the AOR", "alice@example.com",
				Join{AOR: "SIP:Alice@example.com"}, [3]string{"host", "normal", "yes"}, 0},
			{"trusted role Guest wins over the hosts list", "alice@example.com",
				Join{AOR: "alice@example.com", Role: "guest"}, [3]string{"guest", "normal", "yes"}, 0},
			{"trusted role Host wins over the hosts list", "alice@example.com",
				Join{AOR: "carol@example.com", Role: "Host"}, [3]string{"host", "normal", "yes"}, 0},
			{"trusted kind adp defaults keep-alive to if-multiple", "",
				Join{AOR: "dialout@example.com", Kind: "adp"}, [3]string{"host", "adp", "if-multiple"}, 0},
			{"trusted kind admin defaults keep-alive to yes", "",
				Join{AOR: "admin@example.com", Kind: "ADMIN"}, [3]string{"host", "admin", "yes"}, 0},
			{"trusted keep-alive honoured", "",
				Join{AOR: "dialout@example.com", Kind: "adp", KeepAlive: "no"}, [3]string{"host", "adp", "no"}, 0},
			{"bad role ignored: the hosts list decides", "alice@example.com",
				Join{AOR: "carol@example.com", Role: "boss"}, [3]string{"guest", "normal", "yes"}, 1},
			{"bad kind ignored: normal", "",
				Join{AOR: "carol@example.com", Kind: "robot"}, [3]string{"host", "normal", "yes"}, 1},
			{"bad keep-alive ignored: adp gets if-multiple", "",
				Join{AOR: "dialout@example.com", Kind: "adp", KeepAlive: "maybe"}, [3]string{"host", "adp", "if-multiple"}, 1},
			{"bad keep-alive ignored: admin gets yes", "",
				Join{AOR: "admin@example.com", Kind: "admin", KeepAlive: "always"}, [3]string{"host", "admin", "yes"}, 1},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t)
				in := e.instance("A")
				e.newConf("conf-1", tc.hosts)
				j := tc.join
				j.CallID, j.ConfID = "call-1", "conf-1"
				in.mg.Joined(context.Background(), j)
				in.flush()

				r, ok := e.record(t, "conf-1", "call-1")
				if !ok {
					t.Fatal("no participant record in Redis")
				}
				if got := [3]string{r.Role, r.Kind, r.KeepAlive}; got != tc.want {
					t.Errorf("role, kind, keep_alive = %q, want %q", got, tc.want)
				}
				if n := in.logs.count(logLine{level: "warn"}); n != tc.wantWarn {
					t.Errorf("warnings logged = %d, want %d\n%s", n, tc.wantWarn, in.logs)
				}
			})
		}
	})

	t.Run("the record in Redis has every field of the contract", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A")
		e.newConf("conf-1", "")
		c := in.call(t, "call-1", "conf-1")
		in.join(t, c, "alice@example.com")

		raw := e.mr.HGet(e.k.Participants("conf-1"), "call-1")
		var got map[string]any
		if err := json.Unmarshal([]byte(raw), &got); err != nil {
			t.Fatalf("record %q: %v", raw, err)
		}
		want := map[string]any{
			"call_id": "call-1", "instance": "A", "from": "alice@example.com", "role": "host",
			"kind": "normal", "keep_alive": "yes", "media": true, "present": true,
			"joined_ms": float64(t0.UnixMilli()),
		}
		for field, v := range want {
			if got[field] != v {
				t.Errorf("record field %s = %v (%T), want %v", field, got[field], got[field], v)
			}
		}
		if ttl := e.mr.TTL(e.k.Participants("conf-1")); ttl <= 0 || ttl > recordTTL {
			t.Errorf("participants hash TTL = %v, want up to %v", ttl, recordTTL)
		}
	})

	t.Run("a second Joined of the same call changes nothing", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A")
		in.mg.Joined(context.Background(), Join{CallID: "call-1", ConfID: "conf-1", AOR: "a@example.com", Role: "guest"})
		in.mg.Joined(context.Background(), Join{CallID: "call-1", ConfID: "conf-1", AOR: "a@example.com", Role: "host"})
		in.flush()
		if r, _ := e.record(t, "conf-1", "call-1"); r.Role != "guest" {
			t.Errorf("role = %q, want the first join's guest", r.Role)
		}
	})

	t.Run("a call outside any conference is not recorded", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A")
		in.mg.Joined(context.Background(), Join{CallID: "call-1", AOR: "a@example.com"})
		in.flush()
		if keys := e.mr.Keys(); !slices.Equal(keys, []string{e.k.Instance("A")}) {
			t.Errorf("Redis keys = %v, want only the instance hash", keys)
		}
	})
}

// SPEC §5: a participant is present while its own endpoint's RTP flows; one
// silent for media_timeout is ended; silence from the node side alone never
// ends a call.
func TestPresence(t *testing.T) {
	// Long guests-only timeout: no conference rule interferes here.
	quietRules := withPolicy(24*time.Hour, 0)

	t.Run("endpoint RTP makes the participant present, silence for presence_timeout absent", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A", quietRules) // presence 5 s
		c := in.call(t, "call-1", "conf-1")
		in.join(t, c, "alice@example.com")
		in.endpointSends(t, c) // at t0

		e.clock.advance(4 * time.Second)
		in.tick(false)
		if !in.present("call-1") {
			t.Fatal("not present 4 s after the endpoint's last RTP")
		}

		e.clock.advance(time.Second)
		in.tick(false) // not a full pass: the record is written because presence changed
		if in.present("call-1") {
			t.Fatal("still present after 5 s of endpoint silence")
		}
		if r, _ := e.record(t, "conf-1", "call-1"); r.Present {
			t.Error("record still says present")
		}
		if n := testutil.ToFloat64(in.mg.m.present); n != 0 {
			t.Errorf("sipedge_media_participants_present = %v, want 0", n)
		}

		in.endpointSends(t, c) // at t0+5s
		e.clock.advance(100 * time.Millisecond)
		in.tick(false)
		r, _ := e.record(t, "conf-1", "call-1")
		if !in.present("call-1") || !r.Present {
			t.Fatalf("present = %v, record present = %v after RTP again; want both true", in.present("call-1"), r.Present)
		}
		if r.Packets != 2 || r.LastRTPMs != t0.Add(5*time.Second).UnixMilli() {
			t.Errorf("record packets = %d, last_rtp_ms = %d; want 2 and %d", r.Packets, r.LastRTPMs, t0.Add(5*time.Second).UnixMilli())
		}
		if n := testutil.ToFloat64(in.mg.m.present); n != 1 {
			t.Errorf("sipedge_media_participants_present = %v, want 1", n)
		}
	})

	t.Run("silence from the node side alone does not matter", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A", quietRules) // presence 5 s, media timeout 60 s
		c := in.call(t, "call-1", "conf-1")
		in.join(t, c, "alice@example.com")
		in.endpointSends(t, c)

		// The node goes silent, the endpoint keeps sending: present all along.
		for range 12 {
			e.clock.advance(4 * time.Second)
			in.endpointSends(t, c)
			in.tick(true)
			if !in.present("call-1") {
				t.Fatalf("absent at %v although the endpoint sends", e.clock.since())
			}
		}
		if ends := in.ender.log(); len(ends) != 0 {
			t.Fatalf("calls ended with a silent node: %v", ends)
		}

		// The other way round: node RTP neither keeps it present nor alive.
		for range 6 {
			c.nodeSends(t)
			e.clock.advance(10 * time.Second)
			in.tick(true)
			if in.present("call-1") {
				t.Fatalf("present at %v on node RTP alone", e.clock.since())
			}
		}
		want := []string{"call-1 conf-1 media timeout"}
		if got := in.ender.log(); !slices.Equal(got, want) {
			t.Errorf("calls ended = %q, want %q", got, want)
		}
		in.waitLeft(t, "call-1")
	})

	t.Run("media timeout ends only the silent call, with reason media timeout", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A", quietRules) // media timeout 60 s
		quiet := in.call(t, "call-quiet", "conf-1")
		talk := in.call(t, "call-talk", "conf-1")
		in.join(t, quiet, "quiet@example.com")
		in.join(t, talk, "talk@example.com")

		e.clock.advance(30 * time.Second)
		in.endpointSends(t, talk)
		in.tick(true)
		e.clock.advance(30*time.Second - time.Millisecond)
		in.tick(true)
		if ends := in.ender.log(); len(ends) != 0 {
			t.Fatalf("calls ended before media_timeout: %v", ends)
		}

		e.clock.advance(time.Millisecond)
		in.tick(true)
		want := []string{"call-quiet conf-1 media timeout"}
		if got := in.ender.log(); !slices.Equal(got, want) {
			t.Fatalf("calls ended = %q, want %q", got, want)
		}
		in.waitLeft(t, "call-quiet")
		if n := testutil.ToFloat64(in.mg.m.mediaTimeouts); n != 1 {
			t.Errorf("sipedge_media_timeouts_total = %v, want 1", n)
		}
		if in.mg.Sessions() != 1 || in.mg.InUse() != 4 {
			t.Errorf("sessions = %d, ports = %d; want the talking call's 1 and 4", in.mg.Sessions(), in.mg.InUse())
		}
		if _, ok := e.record(t, "conf-1", "call-quiet"); ok {
			t.Error("the timed-out participant is still in Redis")
		}
		if _, ok := e.record(t, "conf-1", "call-talk"); !ok {
			t.Error("the talking participant left Redis")
		}
	})

	t.Run("a control-only participant is never present and never timed out", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			sdp  []byte // nil: no SDP at all
		}{
			{"SDP without audio or video", bfcpSDP(netip.MustParseAddrPort("192.0.2.10:5070"))},
			{"SDP without any stream", noStreamSDP()},
			{"no SDP", nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t)
				in := e.instance("A", quietRules)
				in.mg.Open("call-1", "conf-1", true)
				if tc.sdp != nil {
					in.sdp(t, "call-1", true, tc.sdp)
					in.sdp(t, "call-1", false, tc.sdp)
				}
				in.join(t, &call{id: "call-1", conf: "conf-1"}, "alice@example.com")

				for _, d := range []time.Duration{0, 6 * time.Second, time.Minute, time.Hour} {
					e.clock.set(t0.Add(d))
					in.tick(true)
					if in.present("call-1") {
						t.Fatalf("present at %v", d)
					}
				}
				if ends := in.ender.log(); len(ends) != 0 {
					t.Errorf("calls ended: %v", ends)
				}
				if n := testutil.ToFloat64(in.mg.m.mediaTimeouts); n != 0 {
					t.Errorf("sipedge_media_timeouts_total = %v, want 0", n)
				}
				r, ok := e.record(t, "conf-1", "call-1")
				if !ok || r.Media || r.Present {
					t.Errorf("record found=%v media=%v present=%v, want found, no media, not present", ok, r.Media, r.Present)
				}
			})
		}
	})
}

// SPEC §5 termination rules, end to end through Redis: timers in
// sipedge:conf:<id>, the verdict in its `ended` field, BYEs on local legs.
func TestConferenceRules(t *testing.T) {
	t.Run("host leaves: guests-only timer runs, at its deadline the conference ends", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A", rulesOptions(120*time.Second, 0))
		events := e.subscribe(t)
		e.newConf("conf-1", "host@example.com")
		host, guest := in.call(t, "call-host", "conf-1"), in.call(t, "call-guest", "conf-1")
		in.join(t, host, "host@example.com")
		in.join(t, guest, "guest@example.com")
		in.tick(true)
		if v := e.confField("conf-1", fieldNoHostSince); v != "" {
			t.Fatalf("no_host_since = %q while the Host is in", v)
		}

		e.clock.advance(10 * time.Second)
		left := e.clock.Now()
		in.hangUp(t, host)
		in.tick(true)
		if got, want := e.confField("conf-1", fieldNoHostSince), ms(left); got != want {
			t.Fatalf("no_host_since = %q, want %q", got, want)
		}

		e.clock.set(left.Add(120*time.Second - time.Millisecond))
		in.tick(false)
		if ends := in.ender.log(); len(ends) != 0 {
			t.Fatalf("ended before the guests-only deadline: %v", ends)
		}

		e.clock.set(left.Add(120 * time.Second))
		in.tick(false)
		want := []string{"call-guest conf-1 guests_only"}
		if got := in.ender.log(); !slices.Equal(got, want) {
			t.Fatalf("calls ended = %q, want %q", got, want)
		}
		in.waitLeft(t, "call-guest")
		if v := e.confField("conf-1", fieldEnded); v != "guests_only" {
			t.Errorf("ended = %q, want guests_only", v)
		}
		if v := e.confField("conf-1", fieldCounted); v != "A" {
			t.Errorf("counted = %q, want A", v)
		}
		in.wantEnded(t, policy.RuleGuestsOnly, 1)
		in.wantEnded(t, policy.RuleEmpty, 0) // ended by a rule, not empty
		events.want(t, "conf-end conf-1")
	})

	t.Run("a Host rejoining clears no_host_since", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A", rulesOptions(60*time.Second, 0))
		e.newConf("conf-1", "host@example.com")
		host, guest := in.call(t, "call-host", "conf-1"), in.call(t, "call-guest", "conf-1")
		in.join(t, host, "host@example.com")
		in.join(t, guest, "guest@example.com")
		in.hangUp(t, host)
		in.tick(true)
		if e.confField("conf-1", fieldNoHostSince) == "" {
			t.Fatal("no_host_since not set after the Host left")
		}

		e.clock.advance(30 * time.Second)
		again := in.call(t, "call-host-2", "conf-1")
		in.join(t, again, "sip:HOST@example.com")
		in.tick(true)
		if v := e.confField("conf-1", fieldNoHostSince); v != "" {
			t.Fatalf("no_host_since = %q after the Host rejoined", v)
		}
		e.clock.advance(10 * time.Minute)
		in.tick(true)
		if ends := in.ender.log(); len(ends) != 0 {
			t.Errorf("calls ended although the Host is back: %v", ends)
		}
	})

	t.Run("a control-only Host does not keep the conference alive", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A", rulesOptions(60*time.Second, 0))
		e.newConf("conf-1", "host@example.com")
		in.mg.Open("call-host", "conf-1", true) // joins without SDP
		in.join(t, &call{id: "call-host", conf: "conf-1"}, "host@example.com")
		in.join(t, in.call(t, "call-guest", "conf-1"), "guest@example.com")
		in.tick(true)
		if got, want := e.confField("conf-1", fieldNoHostSince), ms(t0); got != want {
			t.Errorf("no_host_since = %q, want %q", got, want)
		}
	})

	t.Run("ended written by an operator ends the local legs with its reason", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A", rulesOptions(60*time.Second, 0))
		events := e.subscribe(t)
		e.newConf("conf-1", "")
		in.join(t, in.call(t, "call-1", "conf-1"), "alice@example.com")
		in.join(t, in.call(t, "call-2", "conf-1"), "bob@example.com")
		in.join(t, in.call(t, "call-other", "conf-2"), "carol@example.com")

		e.mr.HSet(e.k.Conf("conf-1"), fieldEnded, "operator") // sipedgectl conf end
		in.tick(true)
		want := []string{"call-1 conf-1 operator", "call-2 conf-1 operator"}
		if got := in.ender.log(); !slices.Equal(got, want) {
			t.Fatalf("calls ended = %q, want %q", got, want)
		}
		in.waitLeft(t, "call-1", "call-2")
		in.wantEnded(t, "operator", 1)
		in.wantEnded(t, policy.RuleEmpty, 0)
		events.want(t, "conf-end conf-1")
		if in.mg.Sessions() != 1 {
			t.Errorf("sessions = %d, want the other conference's 1", in.mg.Sessions())
		}
	})

	t.Run("the last participant leaving counts empty once", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A", rulesOptions(60*time.Second, 0))
		e.newConf("conf-1", "")
		a, b := in.call(t, "call-a", "conf-1"), in.call(t, "call-b", "conf-1")
		in.join(t, a, "alice@example.com")
		in.join(t, b, "bob@example.com")

		in.hangUp(t, a)
		in.wantEnded(t, policy.RuleEmpty, 0)
		in.hangUp(t, b)
		in.wantEnded(t, policy.RuleEmpty, 1)
		in.mg.Ended("call-b") // a retransmitted BYE
		in.tick(true)
		in.wantEnded(t, policy.RuleEmpty, 1)
		if v := e.confField("conf-1", fieldEnded); v != "" {
			t.Errorf("ended = %q, want unset (the empty end is not a rule's verdict)", v)
		}
	})

	// SPEC §5 worked examples: guests-only 120 s, backstop 60 s; the last
	// Host leaves at t=0.
	t.Run("worked examples", func(t *testing.T) {
		tests := []struct {
			name     string
			guests   int // guests left at t=30
			wantAt   time.Duration
			wantRule policy.Rule
		}{
			{"one Guest left at t=30 ends at t=90 by the backstop", 1, 90 * time.Second, policy.RuleLastParticipant},
			{"two Guests left at t=30 end at t=120 by guests-only", 2, 120 * time.Second, policy.RuleGuestsOnly},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t)
				in := e.instance("A", rulesOptions(120*time.Second, 60*time.Second))
				e.newConf("conf-1", "host@example.com")
				host := in.call(t, "call-host", "conf-1")
				in.join(t, host, "host@example.com")
				var guests []*call
				for i := range 3 {
					g := in.call(t, fmt.Sprintf("call-guest-%d", i), "conf-1")
					in.join(t, g, fmt.Sprintf("guest%d@example.com", i))
					guests = append(guests, g)
				}
				in.tick(true)

				in.hangUp(t, host) // t=0
				in.tick(true)
				e.clock.set(t0.Add(30 * time.Second))
				for _, g := range guests[tc.guests:] {
					in.hangUp(t, g)
				}
				in.tick(true)

				for len(in.ender.log()) == 0 && e.clock.since() < 10*time.Minute {
					e.clock.advance(time.Second)
					in.tick(false)
				}
				ends := in.ender.ends()
				if len(ends) != tc.guests {
					t.Fatalf("calls ended = %v, want the %d guests", in.ender.log(), tc.guests)
				}
				for _, end := range ends {
					if at := end.At.Sub(t0); at != tc.wantAt || end.Reason != string(tc.wantRule) {
						t.Errorf("%s ended at t=%v by %q, want t=%v by %q", end.CallID, at, end.Reason, tc.wantAt, tc.wantRule)
					}
				}
				in.waitLeft(t, callIDs(guests[:tc.guests])...)
				in.wantEnded(t, tc.wantRule, 1)
				in.wantEnded(t, policy.RuleEmpty, 0)
			})
		}
	})

	t.Run("two instances share a conference: both see everyone, the end counts once", func(t *testing.T) {
		e := newEnv(t)
		a := e.instance("A", rulesOptions(60*time.Second, 0))
		b := e.instance("B", rulesOptions(60*time.Second, 0))
		events := e.subscribe(t)
		e.newConf("conf-1", "host@example.com")
		host := a.call(t, "call-host", "conf-1")
		a.join(t, host, "host@example.com")
		a.join(t, a.call(t, "call-guest-a", "conf-1"), "guest-a@example.com")
		b.join(t, b.call(t, "call-guest-b", "conf-1"), "guest-b@example.com")

		byInstance := map[string]int{}
		for _, id := range []string{"call-host", "call-guest-a", "call-guest-b"} {
			r, ok := e.record(t, "conf-1", id)
			if !ok {
				t.Fatalf("no record for %s", id)
			}
			byInstance[r.Instance]++
		}
		if byInstance["A"] != 2 || byInstance["B"] != 1 {
			t.Fatalf("records by instance = %v, want A:2 B:1", byInstance)
		}
		b.tick(true) // B holds only a Guest: it must see A's Host
		if v := e.confField("conf-1", fieldNoHostSince); v != "" {
			t.Fatalf("B started the guests-only timer (%q) while A's Host is in", v)
		}

		e.clock.advance(10 * time.Second)
		left := e.clock.Now()
		a.hangUp(t, host)
		b.tick(true)
		a.tick(true)
		if got, want := e.confField("conf-1", fieldNoHostSince), ms(left); got != want {
			t.Fatalf("no_host_since = %q, want %q", got, want)
		}

		e.clock.set(left.Add(60 * time.Second))
		a.tick(true)
		b.tick(true)
		if got, want := a.ender.log(), []string{"call-guest-a conf-1 guests_only"}; !slices.Equal(got, want) {
			t.Errorf("A ended %q, want %q", got, want)
		}
		if got, want := b.ender.log(), []string{"call-guest-b conf-1 guests_only"}; !slices.Equal(got, want) {
			t.Errorf("B ended %q, want %q", got, want)
		}
		a.waitLeft(t, "call-guest-a")
		b.waitLeft(t, "call-guest-b")
		for _, rule := range []policy.Rule{policy.RuleGuestsOnly, policy.RuleEmpty} {
			total := testutil.ToFloat64(a.mg.m.ended.WithLabelValues(string(rule))) +
				testutil.ToFloat64(b.mg.m.ended.WithLabelValues(string(rule)))
			if want := map[policy.Rule]float64{policy.RuleGuestsOnly: 1}[rule]; total != want {
				t.Errorf("sipedge_conferences_ended_total{rule=%s} over A and B = %v, want %v", rule, total, want)
			}
		}
		events.want(t, "conf-end conf-1")
		if n := e.mr.Exists(e.k.Participants("conf-1")); n {
			t.Error("participants hash left behind")
		}
	})
}

// A participant that left must stay gone: a record written after its leave
// is a ghost that keeps the conference from ending (present Host) or from
// ever being empty.
func TestEnded_ParticipantStaysGone(t *testing.T) {
	t.Run("Joined after Ended does not resurrect the call", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A")
		e.newConf("conf-1", "")
		c := in.call(t, "call-1", "conf-1")
		in.mg.Ended(c.id)
		in.mg.Joined(context.Background(), Join{CallID: c.id, ConfID: c.conf, AOR: "alice@example.com"})
		in.flush()
		if _, ok := e.record(t, "conf-1", "call-1"); ok || in.mg.Sessions() != 0 {
			t.Errorf("record in Redis = %v, sessions = %d; want none", ok, in.mg.Sessions())
		}
	})

	t.Run("a write queued before the leave is not sent after it", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A")
		e.newConf("conf-1", "")
		c := in.call(t, "call-1", "conf-1")
		in.join(t, c, "alice@example.com")
		s := in.session("call-1") // the loop's snapshot
		in.mg.enqueueWrite(s)     // presence changed
		in.mg.Ended("call-1")
		in.mg.enqueueWrite(s) // the loop, still on its snapshot
		in.flush()
		if r, ok := e.record(t, "conf-1", "call-1"); ok {
			t.Errorf("ghost participant in Redis: %+v", r)
		}
		for _, key := range []string{e.k.Participants("conf-1"), e.k.ParticipantCounts("conf-1"), e.k.ParticipantShares("conf-1")} {
			if e.mr.Exists(key) {
				t.Errorf("%s left behind", key)
			}
		}
	})

	t.Run("a failed flush is sent again, a newer removal first", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A")
		e.newConf("conf-1", "")
		c := in.call(t, "call-1", "conf-1")
		in.mg.Joined(context.Background(), Join{CallID: c.id, ConfID: c.conf, AOR: "alice@example.com"})
		e.mr.SetError("LOADING") // Redis refuses everything
		in.flush()
		e.mr.SetError("")
		if _, ok := e.record(t, "conf-1", "call-1"); ok {
			t.Fatal("record written while Redis failed")
		}
		if n := in.mg.writes.len(); n != 1 {
			t.Fatalf("pending changes after the failed flush = %d, want the write again", n)
		}
		in.flush()
		if _, ok := e.record(t, "conf-1", "call-1"); !ok {
			t.Fatal("the write was not sent again")
		}
		in.mg.Ended("call-1")
		in.flush()
		if _, ok := e.record(t, "conf-1", "call-1"); ok {
			t.Error("record still there after the removal")
		}
	})
}

// Run reacts to conf-end on sipedge:events and frees every port when it stops.
func TestRun(t *testing.T) {
	t.Run("a published conf-end ends the local legs at once", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("B", rulesOptions(60*time.Second, 0)) // Tick 1 h: only the event can wake it
		e.newConf("conf-1", "")
		in.join(t, in.call(t, "call-1", "conf-1"), "alice@example.com")
		stop := in.run(t)
		defer stop()
		eventually(t, "the watcher subscribed to events", func() bool {
			return e.mr.PubSubNumSub(e.k.Events())[e.k.Events()] > 0
		})

		e.mr.HSet(e.k.Conf("conf-1"), fieldEnded, "operator") // sipedgectl conf end on another host
		e.mr.Publish(e.k.Events(), "conf-end conf-1")
		eventually(t, "the local leg ended", func() bool { return len(in.ender.log()) == 1 })
		if got, want := in.ender.log(), []string{"call-1 conf-1 operator"}; !slices.Equal(got, want) {
			t.Errorf("calls ended = %q, want %q", got, want)
		}
		eventually(t, "ports freed", func() bool { return in.mg.InUse() == 0 })
	})

	t.Run("stopping Run frees every relay port", func(t *testing.T) {
		e := newEnv(t)
		in := e.instance("A", withTick(5*time.Millisecond))
		in.call(t, "call-1", "conf-1")
		in.call(t, "call-2", "conf-1")
		stop := in.run(t)
		time.Sleep(20 * time.Millisecond) // a few ticks
		stop()
		if n := in.mg.InUse(); n != 0 {
			t.Errorf("ports in use after Run returned = %d, want 0", n)
		}
	})
}

// ---- helpers ----

var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

// env is one Redis (miniredis) and one clock shared by the instances of a test.
type env struct {
	tb    testing.TB
	mr    *miniredis.Miniredis
	rdb   *redis.Client
	k     keys.Keys
	clock *fakeClock

	mu    sync.Mutex
	beats map[string]bool // instance -> its heartbeat is written (it lives)
}

// beat writes the heartbeat of every living instance at the clock's time,
// as internal/instance does every second.
func (e *env) beat() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, alive := range e.beats {
		if alive {
			e.mr.HSet(e.k.Instance(name), "heartbeat", ms(e.clock.Now()))
		}
	}
}

// die stops an instance's heartbeat.
func (e *env) die(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.beats[name] = false
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { _ = rdb.Close() })
	return &env{tb: tb, mr: mr, rdb: rdb, k: keys.New(""), clock: &fakeClock{now: t0}, beats: map[string]bool{}}
}

// newConf creates sipedge:conf:<id> as the admission layer does, and the
// hosts list when hosts is not empty.
func (e *env) newConf(conf, hosts string) {
	e.mr.HSet(e.k.Conf(conf), "node", "node-1")
	if hosts != "" {
		e.mr.HSet(e.k.ConfCfg(conf), "hosts", hosts)
	}
}

func (e *env) confField(conf, field string) string { return e.mr.HGet(e.k.Conf(conf), field) }

func (e *env) record(tb testing.TB, conf, callID string) (record, bool) {
	tb.Helper()
	raw := e.mr.HGet(e.k.Participants(conf), callID)
	if raw == "" {
		return record{}, false
	}
	var r record
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		tb.Fatalf("participant %s: %v", callID, err)
	}
	return r, true
}

// instance is one sipedge instance: a Manager with its own relay pool,
// metrics, logs and a fake proxy ending its calls.
type instance struct {
	e     *env
	mg    *Manager
	ender *fakeEnder
	logs  *syncBuffer
}

type setup struct {
	Options
	pairs int // relay port pairs in the pool
}

type option func(*setup)

func withPolicy(guestsOnly, backstop time.Duration) option {
	return func(s *setup) { s.Defaults.Policy = policy.Settings{GuestsOnly: guestsOnly, Backstop: backstop} }
}

func withTick(d time.Duration) option { return func(s *setup) { s.Tick = d } }

func withPairs(n int) option { return func(s *setup) { s.pairs = n } }

// rulesOptions keeps every participant present and clear of media_timeout
// without RTP, so that only the conference rules act.
func rulesOptions(guestsOnly, backstop time.Duration) option {
	return func(s *setup) {
		withPolicy(guestsOnly, backstop)(s)
		s.Presence = 24 * time.Hour
		s.Defaults.MediaTimeout = 24 * time.Hour
	}
}

func (e *env) instance(name string, opts ...option) *instance {
	e.tb.Helper()
	logs := &syncBuffer{}
	s := setup{Options: Options{Redis: e.rdb, Keys: e.k, Instance: name,
		Defaults: Settings{MediaTimeout: 60 * time.Second, Policy: policy.DefaultSettings()},
		Presence: 5 * time.Second, Tick: time.Hour, Clock: e.clock.Now,
		Log: zerolog.New(logs), Reg: prometheus.NewRegistry()}, pairs: 32}
	for _, o := range opts {
		o(&s)
	}
	if s.Pool == nil { // a benchmark may bring its own, larger range
		s.Pool = testPool(e.tb, s.pairs)
	}
	// As in the daemon: conf-end messages come from the process's one
	// contract watcher, the only subscriber to the events channel.
	// Its own client, so tests that count the manager's commands (a
	// hook on e.rdb) do not see the watcher's reloads.
	wrdb := redis.NewClient(&redis.Options{Addr: e.mr.Addr()})
	e.tb.Cleanup(func() { wrdb.Close() })
	w, err := contract.NewWatcher(wrdb, e.k, contract.Options{}, zerolog.Nop(), nil)
	if err != nil {
		e.tb.Fatal(err)
	}
	if s.ConfEnds == nil {
		s.ConfEnds = w.ConfEnds()
	}
	mg, err := New(s.Options)
	if err != nil {
		e.tb.Fatal(err)
	}
	in := &instance{e: e, mg: mg, logs: logs, ender: &fakeEnder{mg: mg, clock: e.clock, held: map[string]string{}}}
	e.mu.Lock()
	e.beats[name] = true
	e.mu.Unlock()
	e.beat()
	ectx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); ServeEnds(ectx, mg.EndRequests(), in.ender) }()
	watched := make(chan struct{})
	go func() { defer close(watched); _ = w.Run(ectx) }()
	e.tb.Cleanup(func() { cancel(); <-served; <-watched })
	e.tb.Cleanup(func() {
		for _, s := range mg.snapshot() {
			s.close()
		}
	})
	return in
}

// call is a dialog anchored by an instance: the endpoint (caller) and the
// media node, each with an RTP socket, and the relay ports each sends to.
type call struct {
	id, conf       string
	endpoint, node *party
	relayA, relayB netip.AddrPort // where the endpoint and the node send RTP
	epSeq, nodeSeq uint16
}

// call sets up an audio call from an endpoint: offer and answer anchored.
func (in *instance) call(tb testing.TB, id, conf string) *call {
	tb.Helper()
	c := &call{id: id, conf: conf, endpoint: newParty(tb), node: newParty(tb)}
	in.mg.Open(id, conf, true)
	offer := in.sdp(tb, id, true, audioSDP(c.endpoint.addr(), 1))
	answer := in.sdp(tb, id, false, audioSDP(c.node.addr(), 1))
	c.relayB, c.relayA = relayRTP(tb, offer, 0), relayRTP(tb, answer, 0)
	return c
}

// join records c as answered (the proxy calls Joined on the 200 OK) and
// hands its dialog to the fake proxy.
func (in *instance) join(tb testing.TB, c *call, aor string) {
	tb.Helper()
	in.mg.Joined(context.Background(), Join{CallID: c.id, ConfID: c.conf, AOR: aor})
	in.ender.hold(c.id, c.conf)
	in.flush()
}

// flush sends the queued participant changes, as the loop does each tick.
func (in *instance) flush() { in.mg.flush(context.Background(), in.e.clock.Now(), false, nil) }

// hangUp is a BYE from the endpoint: the proxy forgets the dialog and tells
// the manager, which queues the participant's removal; the flush sends it.
func (in *instance) hangUp(tb testing.TB, c *call) {
	tb.Helper()
	in.ender.forget(c.id)
	in.mg.Ended(c.id)
	in.waitLeft(tb, c.id)
}

// waitLeft sends the queued removals of calls that ended (a BYE, or the
// manager ending them) and checks each one is gone from Redis.
func (in *instance) waitLeft(tb testing.TB, ids ...string) {
	tb.Helper()
	in.flush()
	for _, id := range ids {
		if in.session(id) != nil {
			tb.Errorf("call %s still anchored", id)
		}
	}
}

// tick runs one pass of the loop at the clock's time.
func (in *instance) tick(full bool) {
	in.e.beat()
	in.mg.tick(context.Background(), in.e.clock.Now(), full)
}

// run starts Run; stop ends it and waits for it to return.
func (in *instance) run(tb testing.TB) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.mg.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("Run: %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

func (in *instance) sdp(tb testing.TB, id string, fromCaller bool, body []byte) []byte {
	tb.Helper()
	out, err := in.mg.SDP(id, fromCaller, body)
	if err != nil {
		tb.Fatalf("SDP(%s, fromCaller=%v): %v", id, fromCaller, err)
	}
	return out
}

func (in *instance) session(id string) *session {
	in.mg.mu.Lock()
	defer in.mg.mu.Unlock()
	return in.mg.sessions[id]
}

func (in *instance) stream(tb testing.TB, id string, i int) *relay.Stream {
	tb.Helper()
	s := in.session(id)
	if s == nil {
		tb.Fatalf("no session %s", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.streams) || s.streams[i] == nil {
		tb.Fatalf("call %s has no stream %d", id, i)
	}
	return s.streams[i]
}

func (in *instance) present(id string) bool {
	s := in.session(id)
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.present
}

func (in *instance) endpointPackets(id string) uint64 {
	if s := in.session(id); s != nil {
		return s.endpointStats().Packets
	}
	return 0
}

// endpointSends sends one RTP packet from c's endpoint and waits until the
// relay counted it (stamped with the fake clock's time).
func (in *instance) endpointSends(tb testing.TB, c *call) {
	tb.Helper()
	before := in.endpointPackets(c.id)
	c.epSeq++
	c.endpoint.send(tb, c.relayA, rtpPacket(tb, 0xA, c.epSeq))
	eventually(tb, "endpoint RTP counted", func() bool { return in.endpointPackets(c.id) > before })
}

// nodeSends sends one RTP packet from c's node and waits until the relay
// delivered it to the endpoint.
func (c *call) nodeSends(tb testing.TB) {
	tb.Helper()
	c.nodeSeq++
	pkt := rtpPacket(tb, 0xB, c.nodeSeq)
	c.node.send(tb, c.relayB, pkt)
	c.endpoint.expect(tb, pkt)
}

func (in *instance) wantEnded(tb testing.TB, rule policy.Rule, want float64) {
	tb.Helper()
	if got := testutil.ToFloat64(in.mg.m.ended.WithLabelValues(string(rule))); got != want {
		tb.Errorf("%s: sipedge_conferences_ended_total{rule=%q} = %v, want %v", in.mg.opts.Instance, rule, got, want)
	}
}

func callIDs(calls []*call) []string {
	out := make([]string, len(calls))
	for i, c := range calls {
		out[i] = c.id
	}
	return out
}

// fakeEnder is the proxy as the manager sees it: it holds the answered
// dialogs and, like the real one, tells the manager a call it ends is over.
type fakeEnder struct {
	mg    *Manager
	clock *fakeClock

	mu    sync.Mutex
	held  map[string]string // Call-ID -> conference
	ended []endedCall
}

type endedCall struct {
	CallID, ConfID, Reason string
	At                     time.Time
}

var _ Ender = (*fakeEnder)(nil)

func (f *fakeEnder) hold(callID, conf string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[callID] = conf
}

func (f *fakeEnder) forget(callID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, callID)
}

func (f *fakeEnder) EndCalls(_ context.Context, match func(callID, confID string) bool, reason string) int {
	f.mu.Lock()
	var victims []string
	for id, conf := range f.held {
		if match(id, conf) {
			victims = append(victims, id)
		}
	}
	sort.Strings(victims)
	for _, id := range victims {
		f.ended = append(f.ended, endedCall{CallID: id, ConfID: f.held[id], Reason: reason, At: f.clock.Now()})
		delete(f.held, id)
	}
	f.mu.Unlock()
	for _, id := range victims {
		f.mg.Ended(id)
	}
	return len(victims)
}

func (f *fakeEnder) ends() []endedCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ended)
}

// log lists the ended calls as "<call-id> <conf> <reason>".
func (f *fakeEnder) log() []string {
	var out []string
	for _, e := range f.ends() {
		out = append(out, e.CallID+" "+e.ConfID+" "+e.Reason)
	}
	return out
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *fakeClock) advance(d time.Duration) { c.set(c.Now().Add(d)) }

// since is the time elapsed from t0, for messages.
func (c *fakeClock) since() time.Duration { return c.Now().Sub(t0) }

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// events collects what is published on sipedge:events.
type events struct {
	mu   sync.Mutex
	msgs []string
}

func (e *env) subscribe(tb testing.TB) *events {
	sub := e.mr.NewSubscriber()
	sub.Subscribe(e.k.Events())
	ev := &events{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range sub.Messages() {
			ev.mu.Lock()
			ev.msgs = append(ev.msgs, m.Message)
			ev.mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		sub.Unsubscribe(e.k.Events())
		sub.Close()
		<-done
	})
	return ev
}

// want checks exactly msgs were published.
func (ev *events) want(tb testing.TB, msgs ...string) {
	tb.Helper()
	got := func() []string {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		return slices.Clone(ev.msgs)
	}
	eventually(tb, fmt.Sprintf("published %q", msgs), func() bool { return len(got()) >= len(msgs) })
	if !slices.Equal(got(), msgs) {
		tb.Errorf("published %q, want %q", got(), msgs)
	}
}

// party is an endpoint or a media node: one RTP socket on loopback.
type party struct{ conn *net.UDPConn }

func newParty(tb testing.TB) *party {
	tb.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return &party{conn: c}
}

func (p *party) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *party) send(tb testing.TB, to netip.AddrPort, pkt []byte) {
	tb.Helper()
	if _, err := p.conn.WriteToUDPAddrPort(pkt, to); err != nil {
		tb.Fatal(err)
	}
}

// expect reads the next datagram and checks it is want.
func (p *party) expect(tb testing.TB, want []byte) {
	tb.Helper()
	buf := make([]byte, 2048)
	_ = p.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, src, err := p.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		tb.Fatalf("read on %v: %v", p.addr(), err)
	}
	if !bytes.Equal(buf[:n], want) {
		tb.Fatalf("got %x from %v, want %x", buf[:n], src, want)
	}
}

func rtpPacket(tb testing.TB, ssrc uint32, seq uint16) []byte {
	tb.Helper()
	p := rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: ssrc},
		Payload: bytes.Repeat([]byte{0xd5}, 160),
	}
	b, err := p.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func audioSDP(at netip.AddrPort, version int) []byte {
	return fmt.Appendf(nil, "v=0\r\no=- 1 %d IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n",
		version, at.Addr(), at.Addr(), at.Port())
}

func audioVideoSDP(at netip.AddrPort, version int) []byte {
	return fmt.Appendf(audioSDP(at, version), "m=video %d RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n", at.Port()+2)
}

// bfcpSDP is a control-only offer: a BFCP stream, no audio or video.
func bfcpSDP(at netip.AddrPort) []byte {
	return fmt.Appendf(nil, "v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"+
		"m=application %d TCP/BFCP *\r\na=setup:actpass\r\na=floorctrl:c-s\r\n", at.Addr(), at.Addr(), at.Port())
}

func noStreamSDP() []byte {
	return []byte("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nt=0 0\r\n")
}

// relayRTP is the RTP address of stream i of an SDP body sipedge rewrote.
func relayRTP(tb testing.TB, body []byte, i int) netip.AddrPort {
	tb.Helper()
	streams, err := sdpx.Inspect(body)
	if err != nil {
		tb.Fatalf("rewritten SDP: %v\n%s", err, body)
	}
	if i >= len(streams) {
		tb.Fatalf("rewritten SDP has %d streams, want stream %d\n%s", len(streams), i, body)
	}
	return streams[i].Addr
}

func checkRelay(tb testing.TB, what string, body []byte, rtpAddr, rtcpAddr netip.AddrPort) {
	tb.Helper()
	streams, err := sdpx.Inspect(body)
	if err != nil {
		tb.Fatalf("%s: %v\n%s", what, err, body)
	}
	if got := streams[0]; got.Addr != rtpAddr || got.RTCP != rtcpAddr {
		tb.Errorf("%s: RTP %v RTCP %v, want %v %v\n%s", what, got.Addr, got.RTCP, rtpAddr, rtcpAddr, body)
	}
}

// testPool is a relay pool of pairs port pairs on loopback, in a random
// free range of 40000-60000.
func testPool(tb testing.TB, pairs int) *relay.Pool {
	tb.Helper()
	lo := netip.MustParseAddr("127.0.0.1")
	for range 50 {
		min := 40000 + 2*rand.IntN((20000-2*pairs)/2)
		max := min + 2*pairs - 1
		if !rangeFree(lo, min, max) {
			continue
		}
		p, err := relay.NewPool(lo, min, max)
		if err != nil {
			tb.Fatal(err)
		}
		return p
	}
	tb.Fatal("no free port range in 40000-60000")
	return nil
}

func rangeFree(ip netip.Addr, min, max int) bool {
	for port := min; port <= max; port++ {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
		if err != nil {
			return false
		}
		_ = c.Close()
	}
	return true
}

func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// syncBuffer collects the JSON log lines of a Manager.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// logLine selects log lines: empty members match anything.
type logLine struct {
	level, msg string
	fields     map[string]string
}

func (s *syncBuffer) count(want logLine) int {
	n := 0
	for _, line := range strings.Split(s.String(), "\n") {
		if line == "" {
			continue
		}
		var got map[string]any
		if json.Unmarshal([]byte(line), &got) != nil {
			continue
		}
		if want.level != "" && got["level"] != want.level || want.msg != "" && got["message"] != want.msg {
			continue
		}
		ok := true
		for k, v := range want.fields {
			ok = ok && got[k] == v
		}
		if ok {
			n++
		}
	}
	return n
}

// The participants of an instance whose heartbeat went stale (it died
// with its legs), or of an earlier run of a restarted instance, no longer
// count: their present Host keeps nothing alive.
func TestParticipantsOfDeadInstance_Ignored(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill func(e *env, z *instance) // what happens to Z
	}{
		{"heartbeat stale", func(e *env, z *instance) {
			e.die("Z")
			e.clock.advance(5*time.Second + time.Millisecond) // past heartbeat_timeout
		}},
		{"restarted with the same name", func(e *env, z *instance) {
			e.instance("Z") // a new run of Z writes its own media_boot
			e.mr.HSet(e.k.Instance("Z"), fieldMediaBoot, "another-run")
			e.clock.advance(liveFor)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			in := e.instance("A", rulesOptions(30*time.Second, 0))
			z := e.instance("Z", rulesOptions(30*time.Second, 0))
			e.newConf("conf-1", "host@example.com")
			in.join(t, in.call(t, "call-guest", "conf-1"), "guest@example.com")
			z.join(t, z.call(t, "call-host", "conf-1"), "host@example.com")

			in.tick(true)
			if v := e.confField("conf-1", fieldNoHostSince); v != "" {
				t.Fatalf("no_host_since = %q while Z's Host is alive", v)
			}
			tc.kill(e, z)
			in.tick(true)
			if v := e.confField("conf-1", fieldNoHostSince); v == "" {
				t.Fatal("Z's Host still keeps the conference alive")
			}
		})
	}
}
