package proxy

import (
	"bytes"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// respOn is a UDP datagram answering an INVITE through the proxy's Via of
// branch, and the message sipgo parses from it.
func respOn(t *testing.T, branch string, code int) ([]byte, *sip.Response) {
	t.Helper()
	raw := []byte("SIP/2.0 " + strconv.Itoa(code) + " R\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=" + branch + "\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKcaller\r\n" +
		"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: rs\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
	m, err := newParser().ParseSIP(append([]byte(nil), raw...))
	if err != nil {
		t.Fatal(err)
	}
	r := m.(*sip.Response)
	r.SetSource(nodeSrc.String())
	return raw, r
}

var nodeSrc = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 5090}

// deliver is the read goroutine: the read filter, then (after the
// transaction layer) the transport handler.
func deliver(s *respSeq, raw []byte, r *sip.Response) {
	s.noteArrival(sip.TransportReadProps{Transport: "UDP", RemoteAddr: nodeSrc}, raw)
	s.stamp(r)
}

func codes(rs []*sip.Response) []int {
	out := []int{}
	for _, r := range rs {
		out = append(out, r.StatusCode)
	}
	return out
}

// Responses are relayed in the order they came off the socket, whatever
// order sipgo's goroutines pass them up in: each step stamps (the read
// goroutine) or hands one to the relay (arrived); relayed is what the
// relay sends, in order.
func TestRespSeq_RelaysInArrivalOrder(t *testing.T) {
	type step struct {
		stamp bool // else arrived
		code  int
	}
	for _, tc := range []struct {
		name    string
		steps   []step
		relayed []int
		early   float64
	}{
		{"in order", []step{{true, 100}, {false, 100}, {true, 180}, {false, 180}, {true, 200}, {false, 200}},
			[]int{100, 180, 200}, 0},
		{"200 overtakes 180 (sipgo then drops the 180)", []step{{true, 100}, {true, 180}, {true, 200}, {false, 100}, {false, 200}},
			[]int{100, 180, 200}, 1},
		{"183 overtakes 180, the 180 comes after", []step{{true, 180}, {true, 183}, {false, 183}, {false, 180}, {true, 200}, {false, 200}},
			[]int{180, 183, 200}, 1},
		{"taken before its stamp ran", []step{{true, 180}, {false, 200}, {true, 200}},
			[]int{180, 200}, 1},
		{"a 100 is never relayed ahead, and is still looked at", []step{{true, 100}, {true, 180}, {false, 180}, {false, 100}, {true, 200}, {false, 200}},
			[]int{180, 100, 200}, 0},
		{"a 2xx retransmission stamped after the 2xx", []step{{true, 180}, {false, 180}, {true, 200}, {false, 200}, {true, 200}},
			[]int{180, 200}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newRespSeq()
			var early float64
			s.onEarly = func() { early++ }
			const branch = "z9hG4bKsEtest"
			l := s.openLine(branch)
			msgs, raws := map[int]*sip.Response{}, map[int][]byte{}
			get := func(code int) *sip.Response {
				if msgs[code] == nil {
					raws[code], msgs[code] = respOn(t, branch, code)
				}
				return msgs[code]
			}
			var relayed []int
			for i, st := range tc.steps {
				if st.stamp {
					if i > 0 && !tc.steps[i-1].stamp && tc.steps[i-1].code == st.code {
						continue // delivered with the step before
					}
					r := get(st.code)
					deliver(s, raws[st.code], r)
					continue
				}
				if i+1 < len(tc.steps) && tc.steps[i+1].stamp && tc.steps[i+1].code == st.code {
					// taken before its stamp: placed by the read filter, stamped meanwhile
					r := get(st.code)
					s.noteArrival(sip.TransportReadProps{Transport: "UDP", RemoteAddr: nodeSrc}, raws[st.code])
					go func() { time.Sleep(2 * time.Millisecond); s.stamp(r) }()
				}
				before, skip := s.arrived(l, get(st.code))
				for _, b := range before {
					if b == get(b.StatusCode) {
						t.Fatalf("%d relayed ahead is the original, not a copy", b.StatusCode)
					}
				}
				relayed = append(relayed, codes(before)...)
				if !skip {
					relayed = append(relayed, st.code)
				}
			}
			if !slicesEqual(relayed, tc.relayed) {
				t.Errorf("relayed %v, want %v", relayed, tc.relayed)
			}
			if early != tc.early {
				t.Errorf("counted %v relayed ahead, want %v", early, tc.early)
			}
			s.closeLine(l)
			if s.open.Load() != 0 || len(s.shard(branch).m) != 0 {
				t.Fatal("line still open after closeLine")
			}
		})
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Only the branch forward opened is ordered: a response of another branch
// (a failover's next branch, until forward opens its line) or of no open branch is left alone,
// and a CANCEL's 200 on the INVITE's branch takes no place.
func TestRespSeq_OtherBranchesUntouched(t *testing.T) {
	s := newRespSeq()
	l := s.openLine("z9hG4bKsEone")
	raw, r := respOn(t, "z9hG4bKsEone", 180)
	deliver(s, raw, r)
	raw, r = respOn(t, "z9hG4bKsEnone", 180)
	deliver(s, raw, r)
	cancel200 := []byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsEone\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n")
	s.noteArrival(sip.TransportReadProps{Transport: "UDP", RemoteAddr: nodeSrc}, cancel200)
	if n := len(l.marks); n != 1 {
		t.Fatalf("%d placed on the line, want the 180 only", n)
	}
	_, two := respOn(t, "z9hG4bKsEtwo", 200)
	if before, skip := s.arrived(l, two); len(before) != 0 || skip {
		t.Fatalf("another branch's 200 brought %v (skip %v)", codes(before), skip)
	}
	s.closeLine(l)
	raw, r = respOn(t, "z9hG4bKsEone", 200)
	deliver(s, raw, r) // after close: nothing
	if s.open.Load() != 0 || s.npend.Load() != 0 {
		t.Fatalf("%d lines open, %d stamps pending after close", s.open.Load(), s.npend.Load())
	}
}

// The read filter's scan takes a response to INVITE and its top branch,
// and nothing else.
func TestScanInviteResponse(t *testing.T) {
	for _, tc := range []struct {
		msg    string
		code   int
		branch string
		ok     bool
	}{
		{"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bKa;rport\r\nCSeq: 1 INVITE\r\n\r\n", 180, "z9hG4bKa", true},
		{"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKb, SIP/2.0/UDP 5.6.7.8;branch=z9hG4bKc\r\nCSeq: 7 INVITE\r\n\r\n", 200, "z9hG4bKb", true},
		{"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa\r\nCSeq: 1 CANCEL\r\n\r\n", 0, "", false},
		{"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n", 0, "", false},
		{"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa\r\nCSeq: 1 INVITE\r\n\r\n", 0, "", false},
		{"SIP/2.0 2x0 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa\r\nCSeq: 1 INVITE\r\n\r\n", 0, "", false},
	} {
		code, branch, ok := scanInviteResponse([]byte(tc.msg))
		if ok != tc.ok || (ok && (code != tc.code || string(branch) != tc.branch)) {
			t.Errorf("%q: %d %q %v, want %d %q %v", tc.msg, code, branch, ok, tc.code, tc.branch, tc.ok)
		}
	}
	data := []byte("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bKa\r\nCSeq: 1 INVITE\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() { scanInviteResponse(data) }); n != 0 {
		t.Fatalf("the scan allocates %v times", n)
	}
}

// TestForward_ProvisionalNeverLostToA2xxRightBehind: a node sends 180 and
// its 200 back to back (two datagrams, microseconds apart), for many
// calls. The caller gets the 180, before the 200, in every call: sipgo
// passes each response up on a goroutine of its own, and when the 200's
// won, the client transaction (then Accepted) dropped the 180.
func TestForward_ProvisionalNeverLostToA2xxRightBehind(t *testing.T) {
	const calls = 400
	r := newCallRig(t, false)
	c, nd := r.caller, r.node
	lost, swapped := 0, 0
	for n := 1; n <= calls; n++ {
		c.send(r.pxAddr, appendRequest(nil, "INVITE", r.ruri, c.addr(), n, 1, nil))
		fwd := nd.recv("INVITE ")
		tag := "node-" + strconv.Itoa(n)
		ringing := appendAnswer(nil, fwd, "180 Ringing", tag, nd.addr())
		ok := appendAnswer(nil, fwd, "200 OK", tag, nd.addr())
		nd.send(r.pxAddr, ringing)
		nd.send(r.pxAddr, ok)
		got180 := false
		for {
			m := c.recv("SIP/2.0 ")
			if bytes.HasPrefix(m, []byte("SIP/2.0 180")) {
				got180 = true
			}
			if bytes.HasPrefix(m, []byte("SIP/2.0 200")) {
				break
			}
		}
		if !got180 {
			lost++
			// A 180 after the 200 would be relayed out of order.
			if late := c.recvWithin("SIP/2.0 180", 20*time.Millisecond); late {
				swapped++
			}
		}
	}
	t.Logf("%d calls: %v provisionals relayed ahead of a response that overtook them", calls,
		testutil.ToFloat64(r.px.metrics.orderEarly))
	if lost > 0 {
		t.Errorf("%d of %d callers never got the 180 before the 200 (%d got it after)", lost, calls, swapped)
	}
}

// recvWithin reports whether a datagram starting with prefix arrives within d.
func (p *rawPeer) recvWithin(prefix string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		n, _, err := p.conn.ReadFromUDP(p.in)
		if err != nil {
			return false
		}
		if bytes.HasPrefix(p.in[:n], []byte(prefix)) {
			return true
		}
	}
}
