package admission_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/internal/instance"
	"github.com/sipedge/sipedge/internal/keys"
)

// idleHolder holds no dialog.
type idleHolder struct{}

func (idleHolder) ConfHolding(string) admission.ConfHolding { return admission.ConfHolding{} }
func (idleHolder) NodeDialogs(string) int                   { return 0 }
func (idleHolder) ActiveDialogs() int                       { return 0 }
func (idleHolder) Holdings() admission.Holdings             { return admission.Holdings{} }
func (idleHolder) EndNoted([]string) int                    { return 0 }

// cmdNames records the name of every command a client sends.
type cmdNames struct {
	mu    sync.Mutex
	names map[string]int
}

func (c *cmdNames) add(cmds ...redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cmd := range cmds {
		c.names[cmd.Name()]++
	}
}

func (c *cmdNames) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.names[name]
}

func (c *cmdNames) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *cmdNames) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { c.add(cmd); return next(ctx, cmd) }
}
func (c *cmdNames) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.add(cmds...); return next(ctx, cmds) }
}

// TestHeartbeat_OneWriterOfTheInstancesSet: of the two once-a-second
// loops, only the ledger's beat writes the instance into sipedge:instances
// (inside the script that writes its share); the instance publisher's beat
// writes the instance hash alone.
func TestHeartbeat_OneWriterOfTheInstancesSet(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	names := &cmdNames{names: map[string]int{}}
	rdb.AddHook(names)
	k := keys.New("")
	ctx := context.Background()

	pub := instance.NewPublisher(rdb, k, instance.Info{Name: "A", Addr: "127.0.0.1:5060"}, time.Second,
		func() instance.State { return instance.State{Name: "normal"} }, zerolog.Nop())
	if err := pub.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if got := mr.HGet(k.Instance("A"), "heartbeat"); got == "" {
		t.Fatal("publisher beat wrote no heartbeat")
	}
	if ok, _ := mr.SIsMember(k.Instances(), "A"); ok || names.get("sadd") != 0 {
		t.Fatalf("publisher beat wrote sipedge:instances (member %v, SADD sent %d)", ok, names.get("sadd"))
	}

	l, err := admission.NewLedger(rdb, k, admission.LedgerOptions{Self: "A", Interval: time.Second}, idleHolder{}, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Beat(ctx)
	if ok, _ := mr.SIsMember(k.Instances(), "A"); !ok {
		t.Fatal("ledger beat did not write the instance into sipedge:instances")
	}

	// Removed (sipedgectl instances remove, an empty Redis): the next
	// ledger beat writes it back, the publisher's does not.
	mr.SRem(k.Instances(), "A")
	_ = pub.Beat(ctx)
	if ok, _ := mr.SIsMember(k.Instances(), "A"); ok {
		t.Fatal("publisher beat wrote sipedge:instances after a removal")
	}
	l.Beat(ctx)
	if ok, _ := mr.SIsMember(k.Instances(), "A"); !ok {
		t.Fatal("ledger beat did not write the instance back")
	}
	if got := names.get("sadd"); got != 0 {
		t.Errorf("SADD commands sent by the client = %d, want 0 (the ledger's is inside its script)", got)
	}
}
