package proxy

import (
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// seqReq builds a request with just what the sequencer reads.
func seqReq(method sip.RequestMethod, callID string, cseq uint32, branch string) *sip.Request {
	cseqMethod := method
	r := sip.NewRequest(method, sip.Uri{Host: "127.0.0.1", Port: 5060})
	r.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1",
		Port: 5070, Params: sip.HeaderParams{{K: "branch", V: branch}}})
	id := sip.CallIDHeader(callID)
	r.AppendHeader(&id)
	r.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: cseqMethod})
	return r
}

// returnsWithin runs wait(req) and reports whether it returned within d.
func returnsWithin(s *sequencer, req *sip.Request, d time.Duration) (done <-chan struct{}, ok bool) {
	ch := make(chan struct{})
	go func() { s.wait(req); close(ch) }()
	select {
	case <-ch:
		return ch, true
	case <-time.After(d):
		return ch, false
	}
}

func TestSequencer_ByeWaitsForItsAck(t *testing.T) {
	s := newSequencer(5 * time.Second)
	ack := seqReq(sip.ACK, "c1", 1, "z9hG4bK-ack")
	bye := seqReq(sip.BYE, "c1", 2, "z9hG4bK-bye")
	s.stamp(ack)
	s.stamp(bye)
	done, ok := returnsWithin(s, bye, 50*time.Millisecond)
	if ok {
		t.Fatal("BYE went on before the ACK received ahead of it was handed on")
	}
	s.wait(ack)
	s.handedOn(ack)
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("BYE still held after its ACK was handed on")
	}
	s.handedOn(bye)
	s.handedOn(bye) // twice is harmless
}

func TestSequencer_NotHeld(t *testing.T) {
	cases := []struct {
		name    string
		stamped []*sip.Request // in arrival order; the first ones are never handed on
		handed  []*sip.Request // handed on before the last request waits
		last    *sip.Request
	}{
		{
			name:    "other Call-ID",
			stamped: []*sip.Request{seqReq(sip.INVITE, "a", 1, "z9hG4bK-1")},
			last:    seqReq(sip.BYE, "b", 2, "z9hG4bK-2"),
		},
		{
			name:    "CANCEL overtakes its INVITE",
			stamped: []*sip.Request{seqReq(sip.INVITE, "a", 1, "z9hG4bK-1")},
			last:    seqReq(sip.CANCEL, "a", 1, "z9hG4bK-1"),
		},
		{
			name: "absorbed retransmission holds nobody",
			stamped: []*sip.Request{seqReq(sip.INFO, "a", 1, "z9hG4bK-1"),
				seqReq(sip.INFO, "a", 1, "z9hG4bK-1")},
			handed: []*sip.Request{seqReq(sip.INFO, "a", 1, "z9hG4bK-1")},
			last:   seqReq(sip.BYE, "a", 2, "z9hG4bK-2"),
		},
		{
			name: "ACK of a non-2xx (absorbed by its INVITE transaction) holds nobody",
			stamped: []*sip.Request{seqReq(sip.INVITE, "a", 1, "z9hG4bK-1"),
				seqReq(sip.ACK, "a", 1, "z9hG4bK-1")},
			handed: []*sip.Request{seqReq(sip.INVITE, "a", 1, "z9hG4bK-1")},
			last:   seqReq(sip.INVITE, "a", 2, "z9hG4bK-2"),
		},
		{
			name:    "retransmission passed up again after its transaction ended",
			stamped: []*sip.Request{seqReq(sip.INVITE, "a", 1, "z9hG4bK-1"), seqReq(sip.BYE, "a", 2, "z9hG4bK-2")},
			handed:  []*sip.Request{seqReq(sip.INVITE, "a", 1, "z9hG4bK-1")},
			last:    seqReq(sip.INVITE, "a", 1, "z9hG4bK-1"),
		},
		{
			name:    "request without Call-ID",
			stamped: []*sip.Request{seqReq(sip.INVITE, "a", 1, "z9hG4bK-1")},
			last: func() *sip.Request {
				r := seqReq(sip.BYE, "a", 2, "z9hG4bK-2")
				r.RemoveHeader("Call-ID")
				return r
			}(),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSequencer(5 * time.Second)
			for _, r := range tc.stamped {
				s.stamp(r)
			}
			for _, r := range tc.handed {
				s.wait(r)
				s.handedOn(r)
			}
			s.stamp(tc.last)
			if _, ok := returnsWithin(s, tc.last, 2*time.Second); !ok {
				t.Fatal("held although nothing before it is pending")
			}
		})
	}
}

func TestSequencer_LostRequestCostsOneBoundedWait(t *testing.T) {
	s := newSequencer(30 * time.Millisecond)
	var timeouts atomic.Int32
	s.onTimeout = func() { timeouts.Add(1) }
	lost := seqReq(sip.INFO, "c", 1, "z9hG4bK-lost") // stamped, never reaches onRequest
	bye := seqReq(sip.BYE, "c", 2, "z9hG4bK-bye")
	next := seqReq(sip.BYE, "c", 3, "z9hG4bK-next")
	s.stamp(lost)
	s.stamp(bye)
	if _, ok := returnsWithin(s, bye, 2*time.Second); !ok {
		t.Fatal("wait not bounded")
	}
	if timeouts.Load() != 1 {
		t.Fatalf("timeouts = %d, want 1", timeouts.Load())
	}
	s.handedOn(bye)
	s.stamp(next)
	if _, ok := returnsWithin(s, next, 10*time.Millisecond); !ok {
		t.Fatal("the lost request held a second one")
	}
	s.handedOn(lost) // arriving after all changes nothing
}

// TestSequencer_StampAfterWait: the transaction goroutine may reach wait
// before the read goroutine ran stamp; the order still holds.
func TestSequencer_StampAfterWait(t *testing.T) {
	s := newSequencer(5 * time.Second)
	ack := seqReq(sip.ACK, "c", 1, "z9hG4bK-ack")
	bye := seqReq(sip.BYE, "c", 2, "z9hG4bK-bye")
	s.wait(ack) // queues itself
	s.stamp(ack)
	s.stamp(bye)
	done, ok := returnsWithin(s, bye, 50*time.Millisecond)
	if ok {
		t.Fatal("BYE went on while the ACK queued by wait was in progress")
	}
	s.handedOn(ack)
	select {
	case <-done: // released by the ACK, far sooner than the 5 s bound
	case <-time.After(time.Second):
		t.Fatal("BYE still held 1 s after its ACK was handed on")
	}
	s.handedOn(bye)
}

// TestSequencer_ManyCallsKeepOrder races the goroutines of ACK and BYE the
// way sipgo does, starting the BYE's first: every ACK must still go first.
func TestSequencer_ManyCallsKeepOrder(t *testing.T) {
	s := newSequencer(5 * time.Second)
	const calls = 500
	var mu sync.Mutex
	order := map[string][]sip.RequestMethod{}
	var wg sync.WaitGroup
	handle := func(r *sip.Request) {
		defer wg.Done()
		s.wait(r)
		mu.Lock()
		order[string(*r.CallID())] = append(order[string(*r.CallID())], r.Method)
		mu.Unlock()
		s.handedOn(r)
	}
	for i := 0; i < calls; i++ {
		id := fmt.Sprintf("call-%d", i)
		ack := seqReq(sip.ACK, id, 1, "z9hG4bK-a"+id)
		bye := seqReq(sip.BYE, id, 2, "z9hG4bK-b"+id)
		s.stamp(ack)
		s.stamp(bye)
		wg.Add(2)
		go handle(bye)
		time.Sleep(10 * time.Microsecond)
		go handle(ack)
	}
	wg.Wait()
	for id, o := range order {
		if len(o) != 2 || o[0] != sip.ACK {
			t.Errorf("%s: handled in order %v", id, o)
		}
	}
	if len(order) != calls {
		t.Fatalf("%d calls handled, want %d", len(order), calls)
	}
}

func TestSequencer_IdleCallsAreDropped(t *testing.T) {
	s := newSequencer(time.Second)
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	for i := 0; i < 100; i++ {
		r := seqReq(sip.INVITE, fmt.Sprintf("c%d", i), 1, "z9hG4bK-1")
		s.stamp(r)
		s.wait(r)
		s.handedOn(r)
	}
	if n := s.len(); n != 100 {
		t.Fatalf("tracked %d calls, want 100", n)
	}
	now = now.Add(seqIdle / 2)
	s.stamp(seqReq(sip.BYE, "c7", 2, "z9hG4bK-2")) // still active
	now = now.Add(seqIdle/2 + time.Second)
	s.sweepOnce(now)
	if n := s.len(); n != 1 {
		t.Fatalf("tracked %d calls after the idle time, want only the active one", n)
	}
}

func BenchmarkSequencer_StampWaitHandedOn(b *testing.B) {
	s := newSequencer(time.Second)
	reqs := make([]*sip.Request, 1024)
	for i := range reqs {
		reqs[i] = seqReq(sip.BYE, fmt.Sprintf("bench-%d", i), uint32(i), fmt.Sprintf("z9hG4bK-%d", i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := reqs[i%len(reqs)]
		s.stamp(r)
		s.wait(r)
		s.handedOn(r)
	}
}

// BenchmarkSequencer_NewCall: the cost of a Call-ID's first request, and
// (B/op) the memory a record holds until it is swept.
func BenchmarkSequencer_NewCall(b *testing.B) {
	s := newSequencer(time.Second)
	reqs := make([]*sip.Request, b.N)
	for i := range reqs {
		reqs[i] = seqReq(sip.INVITE, fmt.Sprintf("bench-%d-8d0c2f1e@192.0.2.1", i), 1, fmt.Sprintf("z9hG4bK-%d-a1b2c3", i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, r := range reqs {
		s.stamp(r)
		s.wait(r)
		s.handedOn(r)
	}
}

// A sequenced Call-ID is one object for the collector: its record. The
// keys (Call-ID hash, transaction key) and entries hold no pointer.
func TestSequencer_RecordHoldsNoPointerButItsOwn(t *testing.T) {
	for _, typ := range []reflect.Type{
		reflect.TypeFor[seqKey](), reflect.TypeFor[seqEntry](),
		reflect.TypeFor[seqShard]().Field(1).Type.Key(), // the map's key
	} {
		if field, ok := pointerFree(typ); !ok {
			t.Errorf("%s holds a pointer (%s)", typ, field)
		}
	}
	s := newSequencer(time.Second)
	a, b := s.key(1, sip.INVITE, "z9hG4bK-1"), s.key(1, sip.ACK, "z9hG4bK-1")
	if a != b {
		t.Error("an ACK's key differs from its INVITE's")
	}
	for _, other := range []seqKey{s.key(2, sip.INVITE, "z9hG4bK-1"), s.key(1, sip.BYE, "z9hG4bK-1"), s.key(1, sip.INVITE, "z9hG4bK-2")} {
		if other == a {
			t.Errorf("key %+v equals the INVITE's", other)
		}
	}
}
