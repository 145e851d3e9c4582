package media

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// traffic is what one instance's Redis client exchanged: per participant
// and second.
type traffic struct {
	cmds, sent, received float64 // commands, bytes to Redis, bytes from Redis
}

// measureTraffic puts n participants of one conference on instance A (half
// of them Hosts), runs its loop (real clock, 200 ms ticks) and counts the
// Redis commands (go-redis hook) and the bytes on the wire (a counting TCP
// proxy) for seconds, while churn of the participants per second leave and
// are replaced by new ones (their Joined and Ended included).
func measureTraffic(tb testing.TB, n int, seconds, churn float64) traffic {
	tb.Helper()
	e := newEnv(tb)
	px := newCountingProxy(tb, e.mr.Addr())
	rdb := redis.NewClient(&redis.Options{Addr: px.addr()})
	tb.Cleanup(func() { _ = rdb.Close() })
	var hook countCmds
	rdb.AddHook(&hook)
	in := e.instance("A", rulesOptions(24*time.Hour, 0), func(s *setup) {
		s.Redis, s.Clock, s.Tick = rdb, time.Now, 200*time.Millisecond
	})
	e.newConf("conf-1", "")
	ctx := context.Background()
	next := 0
	join := func() string {
		id := "call-" + strconv.Itoa(next)
		role := "guest"
		if next%2 == 0 {
			role = "host"
		}
		next++
		in.mg.Open(id, "conf-1", true)
		in.mg.Joined(ctx, Join{CallID: id, ConfID: "conf-1", AOR: id + "@example.com", Role: role})
		return id
	}
	var ids []string
	for range n {
		ids = append(ids, join())
	}
	in.run(tb)
	time.Sleep(1200 * time.Millisecond) // joins sent, a full pass done

	cmds0, sent0, recv0 := hook.all(), px.up.Load(), px.down.Load()
	start := time.Now()
	owed := 0.0
	for time.Since(start) < time.Duration(seconds*float64(time.Second)) {
		time.Sleep(100 * time.Millisecond)
		for owed += churn * float64(n) / 10; owed >= 1; owed-- {
			in.mg.Ended(ids[0])
			ids = append(ids[1:], join())
		}
	}
	el := time.Since(start).Seconds()
	per := float64(n) * el
	return traffic{cmds: float64(hook.all()-cmds0) / per, sent: float64(px.up.Load()-sent0) / per,
		received: float64(px.down.Load()-recv0) / per}
}

// Redis traffic per participant does not grow with the conference: a
// conference of 1000 costs each participant no more than one of 100, with
// 10 % of the participants replaced every second.
func TestRedisTrafficPerParticipant_IndependentOfSize(t *testing.T) {
	small, big := measureTraffic(t, 100, 2, 0.1), measureTraffic(t, 1000, 2, 0.1)
	t.Logf("per participant-second: 100: %+v, 1000: %+v", small, big)
	if big.cmds > 1.5*small.cmds {
		t.Errorf("commands per participant-second: %.3f at 1000, %.3f at 100; want no growth", big.cmds, small.cmds)
	}
	if big.received > 1.5*small.received || big.sent > 1.5*small.sent {
		t.Errorf("bytes per participant-second: %.0f/%.0f (to/from Redis) at 1000, %.0f/%.0f at 100; want no growth",
			big.sent, big.received, small.sent, small.received)
	}
}

// BenchmarkConferenceRedisTraffic reports the Redis commands and bytes per
// participant and second of a conference of 10, 100 and 1000 participants
// on one instance: steady (no change), and with 10 % of the participants
// replaced every second.
func BenchmarkConferenceRedisTraffic(b *testing.B) {
	for _, churn := range []float64{0, 0.1} {
		for _, n := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("churn=%g/participants=%d", churn, n), func(b *testing.B) {
				var tr traffic
				runs := 0
				for b.Loop() {
					t := measureTraffic(b, n, 3, churn)
					tr.cmds += t.cmds
					tr.sent += t.sent
					tr.received += t.received
					runs++
				}
				b.ReportMetric(tr.cmds/float64(runs), "cmds/participant-s")
				b.ReportMetric(tr.sent/float64(runs), "bytes-to-redis/participant-s")
				b.ReportMetric(tr.received/float64(runs), "bytes-from-redis/participant-s")
			})
		}
	}
}

// countingProxy forwards TCP connections to a Redis and counts the bytes
// each way.
type countingProxy struct {
	ln       net.Listener
	up, down atomic.Int64
}

func newCountingProxy(tb testing.TB, target string) *countingProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &countingProxy{ln: ln}
	var wg sync.WaitGroup
	tb.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(s, c, &p.up) }()
			go func() { defer wg.Done(); p.pipe(c, s, &p.down) }()
		}
	}()
	return p
}

func (p *countingProxy) addr() string { return p.ln.Addr().String() }

// pipe copies src to dst, counting each chunk before it is written (the
// reader sees it only after the count).
func (p *countingProxy) pipe(dst, src net.Conn, n *atomic.Int64) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			n.Add(int64(k))
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or closed: the other side is closed by the defers
		}
	}
}
