package media

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/media/policy"
)

// The counters and the small snapshot built from them decide exactly as
// the full participant list: every verdict field, on random conferences.
func TestSnapshotOf_DecidesAsTheFullSnapshot(t *testing.T) {
	roles := []policy.Role{policy.RoleHost, policy.RoleGuest}
	kinds := []policy.Kind{policy.KindNormal, policy.KindADP, policy.KindAdmin}
	kas := []policy.KeepAlive{"", policy.KeepYes, policy.KeepNo, policy.KeepIfMultiple}
	settings := []policy.Settings{
		{GuestsOnly: 120 * time.Second, Backstop: 60 * time.Second},
		{GuestsOnly: 30 * time.Second},
	}
	r := rand.New(rand.NewPCG(1, 9))
	for i := range 20000 {
		parts := make([]policy.Participant, r.IntN(7))
		var sum counts
		for j := range parts {
			parts[j] = policy.Participant{ID: fmt.Sprint(j), Role: roles[r.IntN(len(roles))],
				Kind: kinds[r.IntN(len(kinds))], KeepAlive: kas[r.IntN(len(kas))], Present: r.IntN(2) == 0}
			c := shareOf(parts[j])
			for k := range sum {
				sum[k] += c[k]
			}
		}
		var prev policy.Timers
		if r.IntN(2) == 0 {
			prev.NoHostSince = t0.Add(-time.Duration(r.IntN(200)) * time.Second)
		}
		if r.IntN(2) == 0 {
			prev.OneLeftSince = t0.Add(-time.Duration(r.IntN(100)) * time.Second)
		}
		s := settings[i%len(settings)]
		small := snapshotOf(sum)
		want, got := policy.Step(prev, parts, s, t0), policy.Step(prev, small, s, t0)
		if got != want {
			t.Fatalf("participants %+v (counters %v):\nfull snapshot %+v\ncounters      %+v (from %+v)", parts, sum, want, got, small)
		}
		if len(small) > 4 {
			t.Fatalf("snapshot of %v has %d participants, want at most 4", sum, len(small))
		}
	}
}

func TestShareOf(t *testing.T) {
	tests := []struct {
		name string
		p    policy.Participant
		want counts
	}{
		{"present normal Host, yes", policy.Participant{Role: "host", Kind: "normal", KeepAlive: "yes", Present: true}, counts{1, 0, 1, 0, 0}},
		{"absent normal Host counts only as one", policy.Participant{Role: "host", Kind: "normal", KeepAlive: "yes"}, counts{1, 0, 0, 0, 0}},
		{"present adp Host, default keep-alive if-multiple", policy.Participant{Role: "host", Kind: "adp", Present: true}, counts{1, 1, 0, 0, 1}},
		{"present admin Host, yes", policy.Participant{Role: "host", Kind: "admin", KeepAlive: "yes", Present: true}, counts{1, 0, 0, 1, 0}},
		{"Guest with if-multiple", policy.Participant{Role: "guest", Kind: "normal", KeepAlive: "if-multiple", Present: true}, counts{1, 1, 0, 0, 0}},
		{"present Host, no", policy.Participant{Role: "host", Kind: "normal", KeepAlive: "no", Present: true}, counts{1, 0, 0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := shareOf(tc.p); got != tc.want {
				t.Errorf("shareOf = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWriteQueue(t *testing.T) {
	w := func(id string) writeOp { return writeOp{kind: opWrite, callID: id, conf: "c"} }
	rm := func(id string) writeOp { return writeOp{kind: opRemove, callID: id, conf: "c"} }
	tests := []struct {
		name    string
		put     []writeOp
		requeue []writeOp // after a take
		want    []writeOp
	}{
		{"one change per call, in first-change order", []writeOp{w("a"), w("b"), w("a")}, nil, []writeOp{w("a"), w("b")}},
		{"a removal replaces a pending write", []writeOp{w("a"), rm("a")}, nil, []writeOp{rm("a")}},
		{"a write never replaces a pending removal", []writeOp{rm("a"), w("a")}, nil, []writeOp{rm("a")}},
		{"a failed write is not requeued over a newer removal", []writeOp{rm("a")}, []writeOp{w("a"), w("b")}, []writeOp{rm("a"), w("b")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var q writeQueue
			var got []writeOp
			if tc.requeue != nil {
				q.requeue(tc.requeue[:0]) // nothing
				for _, op := range tc.put {
					q.put(op)
				}
				q.requeue(tc.requeue)
			} else {
				for _, op := range tc.put {
					q.put(op)
				}
			}
			got = q.take()
			if !slices.Equal(got, tc.want) {
				t.Errorf("take = %v, want %v", got, tc.want)
			}
			if n := q.len(); n != 0 {
				t.Errorf("pending after take = %d, want 0", n)
			}
		})
	}
}

// A present participant's record is not rewritten while its state holds;
// the per-second media_stats hash has its advancing counters; a state
// change is written.
func TestPresence_RecordWrittenOnStateChangeOnly(t *testing.T) {
	e := newEnv(t)
	in := e.instance("A", withPolicy(24*time.Hour, 0)) // presence 5 s
	c := in.call(t, "call-1", "conf-1")
	in.join(t, c, "alice@example.com")
	in.endpointSends(t, c)
	in.tick(true)
	first := e.mr.HGet(e.k.Participants("conf-1"), "call-1")
	if first == "" {
		t.Fatal("no record after the join")
	}

	var lastPackets uint64
	for i := range 4 {
		e.clock.advance(time.Second)
		in.endpointSends(t, c)
		in.tick(true)
		if got := e.mr.HGet(e.k.Participants("conf-1"), "call-1"); got != first {
			t.Fatalf("record rewritten at t=%v while present all along:\n%s\n%s", e.clock.since(), first, got)
		}
		var st contract.MediaCounters
		raw := e.mr.HGet(e.k.MediaStats("A"), "call-1")
		if err := json.Unmarshal([]byte(raw), &st); err != nil {
			t.Fatalf("media_stats call-1 = %q: %v", raw, err)
		}
		if st.Packets <= lastPackets || st.Conf != "conf-1" || st.AtMs != e.clock.Now().UnixMilli() {
			t.Fatalf("pass %d: media_stats %+v, want packets above %d, conf conf-1, at now", i, st, lastPackets)
		}
		lastPackets = st.Packets
	}
	if n := testutil.ToFloat64(in.mg.m.writes.WithLabelValues("write")); n != 1 {
		t.Errorf("sipedge_media_participant_writes_total{op=write} = %v after 4 s present, want 1 (the join)", n)
	}
	if ttl := e.mr.TTL(e.k.MediaStats("A")); ttl <= 0 || ttl > statsTTL {
		t.Errorf("media_stats TTL = %v, want up to %v", ttl, statsTTL)
	}

	e.clock.advance(5 * time.Second) // silent: absent
	in.tick(false)
	r, _ := e.record(t, "conf-1", "call-1")
	if r.Present || r.UpdatedMs != e.clock.Now().UnixMilli() {
		t.Errorf("record after silence: present %v updated_ms %d, want false and %d", r.Present, r.UpdatedMs, e.clock.Now().UnixMilli())
	}

	if n := testutil.ToFloat64(in.mg.m.writes.WithLabelValues("write")); n != 2 {
		t.Errorf("sipedge_media_participant_writes_total{op=write} = %v after the absence, want 2", n)
	}

	in.hangUp(t, c)
	in.tick(true)
	if n := testutil.ToFloat64(in.mg.m.writes.WithLabelValues("remove")); n != 1 {
		t.Errorf("sipedge_media_participant_writes_total{op=remove} = %v, want 1", n)
	}
	if e.mr.Exists(e.k.MediaStats("A")) && e.mr.HGet(e.k.MediaStats("A"), "call-1") != "" {
		t.Error("media_stats still has the ended call")
	}
}

// However many pokes, a conference is evaluated at most once between two
// ticks; a conference with no participant here is never evaluated.
func TestEvaluateOnce(t *testing.T) {
	e := newEnv(t)
	in := e.instance("A", rulesOptions(60*time.Second, 0))
	e.newConf("conf-1", "")
	in.join(t, in.call(t, "call-1", "conf-1"), "alice@example.com")
	var n countCmds
	e.rdb.AddHook(&n)
	ctx := context.Background()
	for range 50 {
		in.mg.evaluateOnce(ctx, "conf-1", e.clock.Now())
		in.mg.evaluateOnce(ctx, "conf-elsewhere", e.clock.Now())
	}
	if got := n.get("hgetall"); got != 2 { // counters and confcfg, once
		t.Errorf("HGETALL between two ticks = %d, want 2 (one evaluation)", got)
	}
	in.tick(false) // the deferred poke
	if got := n.get("hgetall"); got != 4 {
		t.Errorf("HGETALL after the tick = %d, want 4 (the poke deferred to it)", got)
	}
	in.tick(false)
	if got := n.get("hgetall"); got != 4 {
		t.Errorf("HGETALL after a quiet tick = %d, want still 4", got)
	}
}

// countCmds is a go-redis hook counting commands by name, and all of them.
type countCmds struct {
	mu    sync.Mutex
	names map[string]int
	total int
}

func (c *countCmds) add(cmds ...redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.names == nil {
		c.names = map[string]int{}
	}
	for _, cmd := range cmds {
		c.names[cmd.Name()]++
		c.total++
	}
}

// all is every command counted so far.
func (c *countCmds) all() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

func (c *countCmds) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.names[name]
}

func (c *countCmds) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *countCmds) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.add(cmd)
		return next(ctx, cmd)
	}
}

func (c *countCmds) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.add(cmds...)
		return next(ctx, cmds)
	}
}
