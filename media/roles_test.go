package media

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// cmdLog records what reaches Redis: each command alone, or each pipeline
// as one entry of its commands.
type cmdLog struct {
	mu   sync.Mutex
	sent [][]string
}

func (l *cmdLog) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (l *cmdLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.add([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (l *cmdLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		l.add(cmds)
		return next(ctx, cmds)
	}
}

func (l *cmdLog) add(cmds []redis.Cmder) {
	var trip []string
	for _, c := range cmds {
		trip = append(trip, strings.ToLower(c.Name())+" "+strings.TrimSpace(strings.TrimPrefix(c.String(), c.Name())))
	}
	l.mu.Lock()
	l.sent = append(l.sent, trip)
	l.mu.Unlock()
}

func (l *cmdLog) take() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.sent
	l.sent = nil
	return out
}

// Issue 9 item 2: a call set-up makes at most one synchronous Redis round
// trip (admission's). Joined makes none: the role a join gets from its
// conference's hosts list is read by the write queue's flush, one pipeline
// for every join it carries, one read per conference.
func TestJoined_RolesFromHostsReadByTheFlushInOneRoundTrip(t *testing.T) {
	e := newEnv(t)
	log := &cmdLog{}
	e.rdb.AddHook(log)
	in := e.instance("A")
	e.newConf("conf-1", "alice@example.com")
	e.newConf("conf-2", "bob@example.com")
	log.take()

	joins := []struct{ call, conf, aor, role, want string }{
		{"call-1", "conf-1", "alice@example.com", "", "host"},
		{"call-2", "conf-1", "carol@example.com", "", "guest"},
		{"call-3", "conf-2", "carol@example.com", "", "guest"},
		{"call-4", "conf-2", "dave@example.com", "host", "host"}, // trusted header: no read
	}
	for _, j := range joins {
		in.mg.Joined(context.Background(), Join{CallID: j.call, ConfID: j.conf, AOR: j.aor, Role: j.role})
	}
	if sent := log.take(); len(sent) != 0 {
		t.Fatalf("Joined sent %v to Redis, want nothing", sent)
	}
	in.flush()
	reads := 0
	for _, trip := range log.take() {
		n := 0
		for _, c := range trip {
			if strings.HasPrefix(c, "hget ") && strings.Contains(c, "confcfg") {
				n++
			}
		}
		if n > 0 {
			reads++
			if n != 2 {
				t.Errorf("hosts lists read in one round trip: %d, want 2 (one per conference): %v", n, trip)
			}
		}
	}
	if reads != 1 {
		t.Errorf("round trips reading hosts lists = %d, want 1", reads)
	}
	for _, j := range joins {
		r, ok := e.record(t, j.conf, j.call)
		if !ok || r.Role != j.want {
			t.Errorf("%s (%s in %s): record %+v (found %v), want role %s", j.call, j.aor, j.conf, r, ok, j.want)
		}
	}
	if n := in.logs.count(logLine{msg: "participant joined"}); n != len(joins) {
		t.Errorf("participant joined logged %d times, want %d (once each)\n%s", n, len(joins), in.logs)
	}
}

// A hosts list that cannot be read makes the join a Host: a Redis fault
// must not end conferences by the guests-only rule.
func TestJoined_HostsUnreadableJoinsAsHost(t *testing.T) {
	e := newEnv(t)
	in := e.instance("A")
	e.newConf("conf-1", "alice@example.com")
	in.mg.Joined(context.Background(), Join{CallID: "call-1", ConfID: "conf-1", AOR: "carol@example.com"})
	e.mr.SetError("LOADING Redis is loading the dataset in memory")
	in.flush()
	e.mr.SetError("")
	for _, c := range in.mg.Conferences() {
		for _, p := range c.Participants {
			if p.CallID == "call-1" && p.Role != "host" {
				t.Errorf("role with the hosts list unreadable = %q, want host", p.Role)
			}
		}
	}
	in.flush() // the failed write was requeued
	if r, ok := e.record(t, "conf-1", "call-1"); !ok || r.Role != "host" {
		t.Errorf("record after Redis is back: %+v (found %v), want role host", r, ok)
	}
}
