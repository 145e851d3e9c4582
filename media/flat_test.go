package media

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// tripCounter counts the Redis round trips (one command or one pipeline)
// that carry a command named name.
type tripCounter struct {
	name  string
	mu    sync.Mutex
	trips int
	cmds  int
}

func (c *tripCounter) saw(cmds []redis.Cmder) {
	n := 0
	for _, cmd := range cmds {
		if cmd.Name() == c.name {
			n++
		}
	}
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.trips++
	c.cmds += n
	c.mu.Unlock()
}

func (c *tripCounter) get() (trips, cmds int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.trips, c.cmds
}

func (c *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.saw([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (c *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.saw(cmds)
		return next(ctx, cmds)
	}
}

// TestFullPass_EvaluationsShareRoundTrips: the once-a-second pass over
// every local conference reads them evalBatch to a round trip, so its
// Redis round trips grow by one per evalBatch conferences, not by one per
// conference (with one call per conference, 10 000 calls were 10 000
// sequential round trips a second).
func TestFullPass_EvaluationsShareRoundTrips(t *testing.T) {
	for _, n := range []int{1, evalBatch, evalBatch + 1, 3*evalBatch + 10} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			e := newEnv(t)
			in := e.instance("A", rulesOptions(24*time.Hour, 0))
			for i := range n {
				id := "call-" + strconv.Itoa(i)
				conf := "conf-" + strconv.Itoa(i)
				e.newConf(conf, "")
				in.mg.Open(id, conf, true)
				in.mg.Joined(context.Background(), Join{CallID: id, ConfID: conf, AOR: id + "@example.com", Role: "host"})
			}
			in.flush()
			in.tick(true) // timers settle
			c := &tripCounter{name: "hgetall"}
			e.rdb.AddHook(c)
			in.tick(true)
			trips, cmds := c.get()
			if want := 2 * n; cmds != want { // counters and confcfg of each
				t.Errorf("HGETALL commands in a full pass = %d, want %d (every conference evaluated once)", cmds, want)
			}
			if want := (n + evalBatch - 1) / evalBatch; trips != want {
				t.Errorf("round trips reading conferences in a full pass = %d, want %d", trips, want)
			}
		})
	}
}

// TestFullPass_BatchedVerdicts: conferences read in one batch are each
// judged on their own reads: of two conferences read together, the one
// marked ended has its calls ended, the other keeps them.
func TestFullPass_BatchedVerdicts(t *testing.T) {
	e := newEnv(t)
	in := e.instance("A", rulesOptions(24*time.Hour, 0))
	for _, id := range []string{"a", "b"} {
		e.newConf("conf-"+id, "")
		c := in.call(t, "call-"+id, "conf-"+id)
		in.join(t, c, id+"@example.com")
	}
	e.mr.HSet(e.k.Conf("conf-a"), fieldEnded, "operator")
	in.tick(true)
	if in.session("call-a") != nil {
		t.Error("call-a of the ended conference still anchored")
	}
	if in.session("call-b") == nil {
		t.Error("call-b of the live conference was ended")
	}
}
