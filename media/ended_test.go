package media

import (
	"errors"
	"net/netip"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A call that ended here binds no relay port again: the SDP of a 2xx
// retransmitted after the INVITE was cancelled or timed out, of an ACK, or
// of a re-INVITE behind the BYE comes after Ended, and nothing would ever
// end the session it opened (the ports outlived their calls under load).
func TestSDP_AfterEnded_AnchorsNothing(t *testing.T) {
	offer := audioSDP(netip.MustParseAddrPort("192.0.2.10:4000"), 1)
	answer := audioSDP(netip.MustParseAddrPort("198.51.100.20:5000"), 1)
	for _, tc := range []struct {
		name string
		// before Ended: what the call anchored (none, offer, offer+answer)
		offered, answered bool
		late              []bool // fromCaller of each SDP after Ended
	}{
		{name: "refused before any answer: the 2xx retransmitted after CANCEL", offered: true, late: []bool{false}},
		{name: "answered and ended: a late ACK with SDP and a re-INVITE", offered: true, answered: true, late: []bool{true, true, false}},
		{name: "ended before its SDP (488 path): a retransmitted answer", late: []bool{false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newEnv(t).instance("A")
			in.mg.Open("call-1", "conf-1", true)
			if tc.offered {
				in.sdp(t, "call-1", true, offer)
			}
			if tc.answered {
				in.sdp(t, "call-1", false, answer)
			}
			in.mg.Ended("call-1")
			for i, fromCaller := range tc.late {
				out, err := in.mg.SDP("call-1", fromCaller, answer)
				if !errors.Is(err, ErrCallEnded) || out != nil {
					t.Fatalf("late SDP %d: (%q, %v), want (nil, %v)", i, out, err, ErrCallEnded)
				}
			}
			if n := in.mg.InUse(); n != 0 {
				t.Errorf("ports in use = %d, want 0", n)
			}
			if n := in.mg.Sessions(); n != 0 {
				t.Errorf("sessions = %d, want 0", n)
			}
			if n := testutil.ToFloat64(in.mg.m.sdpErrors.WithLabelValues("ended")); n != float64(len(tc.late)) {
				t.Errorf("sipedge_media_sdp_errors_total{class=ended} = %v, want %d", n, len(tc.late))
			}
		})
	}
}

// A new INVITE that reuses an ended call's Call-ID (after a 401/407 or a
// 3xx) is a new call: it is anchored, joins, and its end frees the ports.
func TestOpen_AfterEnded_IsANewCall(t *testing.T) {
	in := newEnv(t).instance("A")
	offer := audioSDP(netip.MustParseAddrPort("192.0.2.10:4000"), 1)
	in.mg.Open("call-1", "conf-1", true)
	in.sdp(t, "call-1", true, offer)
	in.mg.Ended("call-1") // the 407

	in.mg.Open("call-1", "conf-1", true) // the INVITE with credentials
	in.sdp(t, "call-1", true, offer)
	if n := in.mg.InUse(); n != 4 {
		t.Fatalf("ports in use for the retried INVITE = %d, want 4", n)
	}
	in.mg.Ended("call-1")
	if n := in.mg.InUse(); n != 0 {
		t.Errorf("ports in use after the retried call ended = %d, want 0", n)
	}
}

// Many calls ending in every order the proxy can produce (ended before
// any SDP, after the offer, after the answer, ended twice, late SDP of
// both sides after the end) leave the pool as full as it started.
func TestPortPool_FullAfterCallsFailingEveryWay(t *testing.T) {
	in := newEnv(t).instance("A")
	offer := audioSDP(netip.MustParseAddrPort("192.0.2.10:4000"), 1)
	answer := audioSDP(netip.MustParseAddrPort("198.51.100.20:5000"), 1)
	steps := []func(id string){
		func(id string) { in.mg.Open(id, "conf-1", true) },
		func(id string) { _, _ = in.mg.SDP(id, true, offer) },
		func(id string) { _, _ = in.mg.SDP(id, false, answer) },
		func(id string) { in.mg.Ended(id) },
	}
	for i := range 400 {
		id := "call-" + strconv.Itoa(i)
		// i selects how far the call got before its end (0..3 steps), then
		// the late SDP of either side that follows the end.
		got := i % len(steps)
		for _, f := range steps[:got] {
			f(id)
		}
		in.mg.Ended(id)
		if i%2 == 0 {
			in.mg.Ended(id) // a retransmitted BYE
		}
		_, _ = in.mg.SDP(id, i%3 == 0, answer)
		_, _ = in.mg.SDP(id, i%3 != 0, offer)
	}
	if n := in.mg.InUse(); n != 0 {
		t.Errorf("ports in use = %d, want 0 (the pool full)", n)
	}
	if n := in.mg.Sessions(); n != 0 {
		t.Errorf("sessions = %d, want 0", n)
	}
}
