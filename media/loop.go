package media

import (
	"context"
	"time"

	"github.com/sipedge/sipedge/internal/contract"
)

// Run checks presence, media timeouts and conference timers until ctx
// ends, then frees every relay port and waits for the goroutines it owns
// (the events listener). It owns the participant write queue: one
// pipeline per tick, or sooner when flushAt changes are pending. Call it
// once.
func (mg *Manager) Run(ctx context.Context) error {
	listening := make(chan struct{})
	go func() { defer close(listening); mg.listen(ctx) }()
	defer func() { <-listening }()
	defer mg.stop()
	t := time.NewTicker(mg.opts.Tick)
	defer t.Stop()
	var lastFull time.Time
	for {
		select {
		case <-ctx.Done():
			for _, s := range mg.snapshot() {
				s.close()
			}
			// Removals still queued (calls ended while stopping) go out.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			mg.flush(fctx, mg.opts.Clock(), false, nil)
			cancel()
			return nil
		case conf := <-mg.wake:
			mg.evaluateOnce(ctx, conf, mg.opts.Clock())
		case <-mg.flushNow:
			now := mg.opts.Clock()
			for _, conf := range mg.flush(ctx, now, false, nil) {
				mg.evaluateOnce(ctx, conf, now)
			}
		case <-t.C:
			now := mg.opts.Clock()
			mg.refreshSettings(ctx, now)
			full := now.Sub(lastFull) >= time.Second
			if full {
				lastFull = now
			}
			mg.tick(ctx, now, full)
		}
	}
}

// evaluateOnce evaluates a local conference now unless it was evaluated
// since the last tick; then the next tick does (however many pokes came).
// A conference with no participant here is not this instance's to judge.
func (mg *Manager) evaluateOnce(ctx context.Context, conf string, now time.Time) {
	if !mg.local(conf) {
		return
	}
	if mg.evaluated[conf] {
		mg.poked[conf] = true
		return
	}
	mg.evaluated[conf] = true
	mg.evaluate(ctx, conf, now)
}

// tick updates presence, ends participants silent past media_timeout,
// sends the queued record changes (and, on a full pass, the per-second
// packet counters) and evaluates each local conference at most once:
// those whose timer is due, that changed or were poked, and on a full
// pass (once a second) every local one, which also catches an end decided
// elsewhere and an instance that died.
func (mg *Manager) tick(ctx context.Context, now time.Time, full bool) {
	set := mg.settings.get()
	confs := map[string]bool{} // local conferences; true: evaluate this tick
	present := 0
	var stats []statEntry
	for i, s := range mg.snapshot() {
		mg.pollRelay(i)
		st := s.endpointStats()
		s.mu.Lock()
		if !s.joined || s.closed {
			s.mu.Unlock()
			continue
		}
		since := silentSince(s.joinedAt, st)
		silent := now.Sub(since)
		was := s.present
		s.present = s.hasMedia && silent < mg.opts.Presence
		changed, conf, hasMedia := was != s.present, s.confID, s.hasMedia
		if s.present {
			present++
		}
		s.mu.Unlock()
		confs[conf] = confs[conf] || full

		if hasMedia && silent >= set.MediaTimeout {
			mg.mediaTimeout(ctx, s, conf, silent)
			continue
		}
		if full {
			c := contract.MediaCounters{Conf: conf, Packets: st.Packets, Bytes: st.Bytes, Lost: st.Lost}
			if !st.LastPacket.IsZero() {
				c.LastRTPMs = st.LastPacket.UnixMilli()
			}
			stats = append(stats, statEntry{callID: s.callID, c: c})
		}
		if changed {
			mg.enqueueWrite(s)
			mg.log.Info().Str("call_id", s.callID).Str("conf_id", conf).Bool("present", !was).
				Dur("silent", silent).Msg("participant presence changed")
		}
	}
	mg.m.present.Set(float64(present))
	mg.m.conferences.Set(float64(len(confs)))
	want := mg.confs.due(now)
	for conf := range mg.poked {
		want = append(want, conf)
	}
	clear(mg.poked)
	clear(mg.evaluated)
	want = append(want, mg.flush(ctx, now, full, stats)...)
	for _, conf := range want {
		if _, ok := confs[conf]; ok || mg.local(conf) {
			confs[conf] = true
		} else {
			mg.confs.forget(conf) // no leg here any more
		}
	}
	// Each conference at most once a tick, however many of its
	// participants changed; their reads pipelined (evaluateAll).
	due := make([]string, 0, len(confs))
	for conf, d := range confs {
		if d {
			mg.evaluated[conf] = true
			due = append(due, conf)
		}
	}
	mg.evaluateAll(ctx, due, now)
}

// mediaTimeout ends a participant whose endpoint went silent: BYE to the
// endpoint and to the node.
func (mg *Manager) mediaTimeout(ctx context.Context, s *session, conf string, silent time.Duration) {
	mg.m.mediaTimeouts.Inc()
	mg.log.Info().Str("call_id", s.callID).Str("conf_id", conf).Stringer("silent", silent).
		Msg("participant ended: no RTP from its endpoint for media_timeout")
	if mg.ender == nil || mg.ender.EndCalls(ctx, func(id, _ string) bool { return id == s.callID }, "media timeout") == 0 {
		// Not a dialog the proxy holds (or already gone): free it anyway.
		mg.Ended(s.callID)
	}
}

// listen reacts at once to "conf-end <id>" on the events channel
// (sipedgectl conf end, or another instance that decided an end), read
// from the process's one subscription (Options.ConfEnds). Without it the
// periodic pass still finds an ended conference, a tick later.
func (mg *Manager) listen(ctx context.Context) {
	ends := mg.opts.ConfEnds
	if ends == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case conf, ok := <-ends:
			if !ok {
				return
			}
			mg.poke(conf)
		}
	}
}
