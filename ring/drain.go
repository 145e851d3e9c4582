package ring

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// drainExpired is the drain_timeout rule (SPEC §4): a node out of service
// with calls still on it, draining longer than timeout (0: never), is due
// its BYEs. Snapshots judge it when built, DrainEnforcer on every tick.
func drainExpired(n Node, calls int, timeout time.Duration, now time.Time) bool {
	return calls > 0 && timeout > 0 && !n.DrainStarted.IsZero() && now.Sub(n.DrainStarted) > timeout
}

// ExpiredDrains names the nodes of statuses whose drain outlived timeout
// at now, in the order given.
func ExpiredDrains(statuses []NodeStatus, timeout time.Duration, now time.Time) []string {
	var out []string
	for _, st := range statuses {
		// A node kept active (the last of its site) is not draining.
		if !st.InService && !st.KeptActive && drainExpired(st.Node, st.Calls, timeout, now) {
			out = append(out, st.Node.Name)
		}
	}
	return out
}

// SnapshotSource yields the current snapshot (Watcher does).
type SnapshotSource interface{ Snapshot() *Snapshot }

var _ SnapshotSource = (*Watcher)(nil)

// DrainPolicy is what DrainEnforcer needs of the settings: the drain
// timeout (NodePolicy) and whether the drain action is bye.
type DrainPolicy interface {
	PolicySource
	DrainBye() bool
}

// EndNodeCalls ends the calls this instance holds on node with a BYE
// carrying reason, and returns how many it ended (the proxy does it).
type EndNodeCalls func(ctx context.Context, node, reason string) int

// Ticker is the part of time.Ticker DrainEnforcer uses (injected in tests).
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

type realTicker struct{ *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.Ticker.C }

// DrainOptions configures a DrainEnforcer.
type DrainOptions struct {
	Every     time.Duration              // how often drains are checked (default 1 s)
	Now       func() time.Time           // default time.Now
	NewTicker func(time.Duration) Ticker // default a time.Ticker
}

// DrainEnforcer ends, every tick, the calls this instance holds on nodes
// whose drain outlived drain_timeout, when the drain action is bye (SPEC
// §4). Every instance does it for its own dialogs, so the node empties.
type DrainEnforcer struct {
	nodes  SnapshotSource
	policy DrainPolicy
	end    EndNodeCalls
	opts   DrainOptions
	log    zerolog.Logger
}

// DrainReason is the Reason text of the BYEs sent at a drain timeout.
const DrainReason = "drain timeout"

// NewDrainEnforcer returns an enforcer of the drains of nodes' snapshots
// under policy, ending calls through end; Run drives it.
func NewDrainEnforcer(nodes SnapshotSource, policy DrainPolicy, end EndNodeCalls, opts DrainOptions, log zerolog.Logger) *DrainEnforcer {
	if opts.Every <= 0 {
		opts.Every = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.NewTicker == nil {
		opts.NewTicker = func(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }
	}
	return &DrainEnforcer{nodes: nodes, policy: policy, end: end, opts: opts, log: log}
}

// Run checks the drains every tick until ctx is done.
func (d *DrainEnforcer) Run(ctx context.Context) {
	t := d.opts.NewTicker(d.opts.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		d.Check(ctx)
	}
}

// Check ends the calls held here on every node whose drain expired now,
// and returns how many it ended.
func (d *DrainEnforcer) Check(ctx context.Context) int {
	if !d.policy.DrainBye() {
		return 0
	}
	total := 0
	for _, name := range ExpiredDrains(d.nodes.Snapshot().Statuses(), d.policy.NodePolicy().DrainTimeout, d.opts.Now()) {
		if n := d.end(ctx, name, DrainReason); n > 0 {
			total += n
			d.log.Warn().Str("node", name).Int("calls", n).Msg("drain timeout: ended the calls still on the node")
		}
	}
	return total
}
