// Package instance publishes this sipedge instance in Redis
// (sipedge:instance:<name>, the record of contract.Instance) with a
// heartbeat, so operators and other instances can see who is alive. Its
// membership of sipedge:instances is written by the dialog-count ledger
// (admission.Ledger), in the same script that writes its share of the
// counts each beat: one writer of the set per beat, and an instance is a
// member whenever its share is summed.
package instance

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/internal/logging"
)

// Info is what an instance writes about itself.
type Info struct {
	Name, Site, Server, Addr string
}

// State is the part of the hash that changes: read at each beat.
type State struct {
	Name       string // normal | draining | drained
	Dialogs    int
	Deserviced bool
	HeldBack   bool
}

// Publisher writes the instance hash every interval.
type Publisher struct {
	rdb      redis.UniversalClient
	keys     keys.Keys
	info     Info
	interval time.Duration
	state    func() State
	log      zerolog.Logger
}

// NewPublisher returns a Publisher; state is read at each beat.
func NewPublisher(rdb redis.UniversalClient, k keys.Keys, info Info, interval time.Duration,
	state func() State, log zerolog.Logger) *Publisher {
	return &Publisher{rdb: rdb, keys: k, info: info, interval: interval, state: state, log: log}
}

// Beat writes the instance hash once (not the sipedge:instances set: see
// the package comment).
func (p *Publisher) Beat(ctx context.Context) error {
	st := p.state()
	err := p.rdb.HSet(ctx, p.keys.Instance(p.info.Name), contract.InstanceFields(contract.Instance{
		Name: p.info.Name, Site: p.info.Site, Server: p.info.Server, Addr: p.info.Addr,
		State: st.Name, Dialogs: st.Dialogs, Deserviced: st.Deserviced, HeldBack: st.HeldBack,
		Heartbeat: time.Now()})...).Err()
	if err != nil {
		return fmt.Errorf("write instance %q heartbeat: %w", p.info.Name, err)
	}
	return nil
}

// Run beats until ctx is done; failures are logged, never fatal (Redis may
// come back).
func (p *Publisher) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	outage := logging.NewOutage(p.log, "instance heartbeat failing", "instance heartbeat restored")
	for {
		err := p.Beat(ctx)
		if ctx.Err() == nil {
			outage.Note(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
