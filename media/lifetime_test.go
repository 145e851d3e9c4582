package media

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Every goroutine the manager starts (the events listener, the relay
// readers of its sessions, the participants leaving) is stopped and waited
// for by Run.
func TestRun_NoGoroutineOutlivesIt(t *testing.T) {
	e := newEnv(t)
	in := e.instance("A", withTick(5*time.Millisecond))
	e.newConf("conf-1", "")
	// The env's contract watcher (the daemon's, not Run's) subscribes to
	// the events channel; its goroutines are the env's.
	eventually(t, "the watcher subscribed to events", func() bool {
		return e.mr.PubSubNumSub(e.k.Events())[e.k.Events()] > 0
	})
	time.Sleep(50 * time.Millisecond) // go-redis starts its channel goroutines after SUBSCRIBE
	before := goleak.IgnoreCurrent()  // miniredis, the client, the watcher, the test's ServeEnds
	c1 := in.call(t, "call-1", "conf-1")
	c2 := in.call(t, "call-2", "conf-1")
	in.join(t, c1, "alice@example.com")
	in.join(t, c2, "bob@example.com")
	stop := in.run(t)
	in.ender.forget(c1.id)
	in.mg.Ended(c1.id) // its participant leaves in the background
	stop()
	if _, ok := e.record(t, "conf-1", c1.id); ok {
		t.Errorf("participant %s still in Redis after Run returned: its leave was not waited for", c1.id)
	}
	if n := in.mg.InUse(); n != 0 {
		t.Errorf("ports in use after Run returned = %d, want 0", n)
	}
	// After Run: a call's end starts nothing, a late session relays nothing.
	in.mg.Ended(c2.id)
	in.mg.Open("late", "conf-1", true)
	_, _ = in.mg.SDP("late", true, audioSDP(c1.endpoint.addr(), 1))
	goleak.VerifyNone(t, before, ignoreRedisServer, ignoreRedisPeer)
}

var ignoreRedisPeer = goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2/server.(*Server).servePeer")

// ignoreRedisServer, ignoreRedisPeer: miniredis serves each connection the client's pool
// opens in goroutines of its own (until the test's cleanup stops it).
var ignoreRedisServer = goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2/server.readArray")

func TestEndRequests(t *testing.T) {
	for _, tc := range []struct {
		name   string
		serve  bool // ServeEnds runs
		cancel bool // the asker's context ends first
		want   int
		wantBy []string
	}{
		{name: "answered by the proxy", serve: true, want: 1, wantBy: []string{"call-1 conf-1 media timeout"}},
		{name: "nobody serving, the asker gives up with its context", cancel: true, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			before := goleak.IgnoreCurrent() // miniredis and the client
			mg, err := New(Options{Pool: testPool(t, 2), Redis: e.rdb, Keys: e.k, Instance: "A", Clock: e.clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			ender := &fakeEnder{mg: mg, clock: e.clock, held: map[string]string{}}
			ender.hold("call-1", "conf-1")
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan struct{})
			if tc.serve {
				go func() { defer close(served); ServeEnds(ctx, mg.EndRequests(), ender) }()
			} else {
				close(served)
			}
			actx, acancel := context.WithCancel(context.Background())
			if tc.cancel {
				acancel()
			}
			n := mg.ender.EndCalls(actx, func(id, _ string) bool { return id == "call-1" }, "media timeout")
			acancel()
			cancel()
			<-served
			goleak.VerifyNone(t, before, ignoreRedisServer, ignoreRedisPeer)
			if n != tc.want {
				t.Errorf("EndCalls = %d, want %d", n, tc.want)
			}
			if got := ender.log(); len(got) != len(tc.wantBy) || (len(got) > 0 && got[0] != tc.wantBy[0]) {
				t.Errorf("proxy ended %q, want %q", got, tc.wantBy)
			}
		})
	}
}
