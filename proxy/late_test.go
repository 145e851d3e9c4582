package proxy

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// lateServerTx is what sipgo hands onRequest for a retransmission whose
// datagram was read before its transaction's answer was recorded (absorb
// let it through) and whose goroutine reached the transaction layer after
// the transaction had been ended: a new server transaction for the same
// key. Built here directly, since the race itself is a matter of goroutine
// scheduling on a loaded machine.
func lateServerTx(t *testing.T, msg []byte, from string) (*sip.Request, *sip.ServerTx) {
	t.Helper()
	m, err := newParser().ParseSIP(append([]byte(nil), msg...))
	if err != nil {
		t.Fatal(err)
	}
	req := m.(*sip.Request)
	req.SetSource(from)
	req.SetTransport("UDP")
	key, err := sip.ServerTxKeyMake(req)
	if err != nil {
		t.Fatal(err)
	}
	tx := sip.NewServerTx(key, req, &fakeStream{}, slog.New(slog.DiscardHandler))
	if err := tx.Init(); err != nil {
		t.Fatal(err)
	}
	return req, tx
}

// TestLateRetransmission_AbsorbedNotForwarded: a retransmission of a
// finished UDP transaction that reaches onRequest as a new transaction is
// absorbed as absorb would have: an INVITE answered 2xx is dropped (it
// used to be admitted and forwarded as a second call with the same
// Call-ID), a BYE gets its final answer again and is not forwarded.
func TestLateRetransmission_AbsorbedNotForwarded(t *testing.T) {
	for _, tc := range []struct {
		method  string
		counter func(r *callRig) float64
		resent  bool // the caller gets the stored answer again
	}{
		{"INVITE", func(r *callRig) float64 { return testutil.ToFloat64(r.px.fin.m.inviteDropped) }, false},
		{"BYE", func(r *callRig) float64 { return testutil.ToFloat64(r.px.fin.m.resent) }, true},
	} {
		t.Run(tc.method, func(t *testing.T) {
			r := newCallRig(t, false)
			c, nd := r.caller, r.node
			inv := appendRequest(nil, "INVITE", r.ruri, c.addr(), 7, 1, nil)
			c.send(r.pxAddr, inv)
			fwd := nd.recv("INVITE ")
			nd.send(r.pxAddr, appendAnswer(nil, fwd, "200 OK", "node-7", nd.addr()))
			first := append([]byte(nil), c.recv("SIP/2.0 200")...)
			late := inv
			if tc.method == "BYE" {
				route := headerLine(first, "Record-Route:")[len("Record-Route: "):]
				late = appendRequest(nil, "BYE", r.ruri, c.addr(), 7, 2, route)
				c.send(r.pxAddr, late)
				bye := nd.recv("BYE ")
				nd.send(r.pxAddr, appendAnswer(nil, bye, "200 OK", "", nd.addr()))
				first = append([]byte(nil), c.recv("SIP/2.0 200")...)
			}
			before := tc.counter(r)
			req, tx := lateServerTx(t, late, c.addr())
			r.px.onRequest(req, tx)
			if got := tc.counter(r); got != before+1 {
				t.Errorf("counted %v, want %v", got, before+1)
			}
			select {
			case <-tx.Done():
			default:
				t.Error("the new server transaction was left running")
			}
			if tc.resent {
				if again := c.recv("SIP/2.0 "); !bytes.Equal(again, first) {
					t.Errorf("late %s answered\n%s\nfirst answer was\n%s", tc.method, again, first)
				}
			} else {
				c.expectNothing("SIP/2.0 ", 200*time.Millisecond)
			}
			nd.expectNothing(tc.method+" ", 300*time.Millisecond)
		})
	}
}
