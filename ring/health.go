package ring

import (
	"context"
	"sync"
	"time"
)

// Pinger sends one SIP OPTIONS to a node and reports whether it answered;
// the proxy package implements it with its SIP stack. Ping must return once
// ctx is done: a probe round waits for all of its probes.
type Pinger interface {
	Ping(ctx context.Context, n Node) error
}

// HealthOptions says how node health is judged.
type HealthOptions struct {
	HeartbeatTimeout time.Duration // a node that writes heartbeat is alive while now-heartbeat <= this (default 5s)
	ProbeInterval    time.Duration // 0 disables OPTIONS probing
	ProbeTimeout     time.Duration // per probe (default: min(ProbeInterval, 2s))
	DownAfter        int           // consecutive failures to mark down (default 3)
	UpAfter          int           // consecutive successes to mark up again (default 2)
	SuspectHold      time.Duration // a node marked suspect stays out this long unless a probe clears it (default DefaultSuspectHold)
}

// Health defaults (SPEC §7: a silent node leaves within a few seconds).
const (
	DefaultHeartbeatTimeout = 5 * time.Second
	DefaultDownAfter        = 3
	DefaultUpAfter          = 2
	maxDefaultProbeTimeout  = 2 * time.Second
)

func (o HealthOptions) withDefaults() HealthOptions {
	if o.HeartbeatTimeout <= 0 {
		o.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if o.ProbeInterval < 0 {
		o.ProbeInterval = 0
	}
	if o.ProbeTimeout <= 0 && o.ProbeInterval > 0 {
		// A probe never outlives its round, so rounds never pile up.
		o.ProbeTimeout = min(o.ProbeInterval, maxDefaultProbeTimeout)
	}
	if o.DownAfter <= 0 {
		o.DownAfter = DefaultDownAfter
	}
	if o.UpAfter <= 0 {
		o.UpAfter = DefaultUpAfter
	}
	if o.SuspectHold <= 0 {
		o.SuspectHold = DefaultSuspectHold
	}
	return o
}

// probes is the OPTIONS state per node: up or down with hysteresis, so one
// lost UDP datagram does not flap a node in and out of every ring. A node
// not seen before is up (optimistic, like Kamailio's dispatcher): a new
// node takes calls at once, and a dead one leaves after DownAfter probes.
type probes struct {
	downAfter, upAfter int

	mu    sync.Mutex
	state map[string]*probeState
}

type probeState struct {
	down   bool
	streak int // consecutive results contradicting the current state
}

func newProbes(downAfter, upAfter int) *probes {
	return &probes{downAfter: downAfter, upAfter: upAfter, state: map[string]*probeState{}}
}

// record adds one probe result and reports whether the node changed state.
func (p *probes) record(name string, ok bool) (changed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state[name]
	if st == nil {
		st = &probeState{}
		p.state[name] = st
	}
	if ok != st.down { // result agrees with the current state
		st.streak = 0
		return false
	}
	st.streak++
	need := p.downAfter
	if st.down {
		need = p.upAfter
	}
	if st.streak < need {
		return false
	}
	st.down, st.streak = !st.down, 0
	return true
}

// up reports whether probes consider the node up.
func (p *probes) up(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state[name]
	return st == nil || !st.down
}

// retain forgets nodes that are no longer known, so a node removed and
// re-added later starts optimistic again instead of with stale history.
func (p *probes) retain(known map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name := range p.state {
		if !known[name] {
			delete(p.state, name)
		}
	}
}

// probeLoop probes every valid node each ProbeInterval, eligible or not:
// a node that is down must be probed to come back.
func (w *Watcher) probeLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.Health.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.probeRound(ctx)
		}
	}
}

// probeRound sends one OPTIONS to every node at once and waits for all of
// them (each bounded by ProbeTimeout), then rebuilds if any state flipped.
func (w *Watcher) probeRound(ctx context.Context) {
	sts := w.Snapshot().statuses
	sent := w.opts.Now()
	results := make([]error, len(sts))
	rtts := make([]time.Duration, len(sts))
	var wg sync.WaitGroup
	for i := range sts {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, w.opts.Health.ProbeTimeout)
			defer cancel()
			start := w.opts.Now()
			results[i] = w.pinger.Ping(pctx, sts[i].Node)
			rtts[i] = w.opts.Now().Sub(start)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // cancelled probes say nothing about the nodes
	}
	changed := false
	for i, err := range results {
		n := sts[i].Node
		w.m.observeProbe(n.Name, rtts[i], err == nil)
		if err != nil {
			w.m.probeFailures.Inc()
		} else if w.sus.probed(n.Name, sent, w.opts.Now()) {
			changed = true
			w.log.Info().Str("node", n.Name).Str("addr", n.Addr).Msg("media node no longer suspect: OPTIONS probe answered")
		}
		if !w.probes.record(n.Name, err == nil) {
			continue
		}
		changed = true
		if err != nil {
			w.log.Warn().Err(err).Str("node", n.Name).Str("addr", n.Addr).
				Int("failures", w.opts.Health.DownAfter).Msg("media node down: OPTIONS probes failing")
		} else {
			w.log.Info().Str("node", n.Name).Str("addr", n.Addr).Msg("media node up: OPTIONS probes answered")
		}
	}
	if changed {
		w.mu.Lock()
		w.rebuildLocked()
		w.mu.Unlock()
	}
}
