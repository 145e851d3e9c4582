package media

import (
	"context"
	"time"

	"github.com/sipedge/sipedge/internal/keys"
)

// Run checks presence, media timeouts and conference timers until ctx
// ends, then frees every relay port and waits for the goroutines it owns
// (the events listener, the background writes). Call it once.
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
			return nil
		case conf := <-mg.wake:
			mg.evaluate(ctx, conf, mg.opts.Clock())
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

// tick updates presence, ends participants silent past media_timeout and
// evaluates conferences: those whose timer is due, and every local one
// once a second (which also catches an end decided elsewhere).
func (mg *Manager) tick(ctx context.Context, now time.Time, full bool) {
	set := mg.settings.get()
	confs := map[string]bool{} // local conferences; true: evaluate this tick
	present := 0
	for _, s := range mg.snapshot() {
		st := s.endpointStats()
		s.mu.Lock()
		if !s.joined {
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
		if changed || full {
			if err := mg.writeParticipant(ctx, s); err != nil {
				mg.redisError("write participant", err)
			}
		}
		if changed {
			mg.log.Info().Str("call_id", s.callID).Str("conf_id", conf).Bool("present", !was).
				Dur("silent", silent).Msg("participant presence changed")
			confs[conf] = true
		}
	}
	mg.m.present.Set(float64(present))
	mg.m.conferences.Set(float64(len(confs)))
	for _, conf := range mg.confs.due(now) {
		confs[conf] = true
	}
	// Each conference at most once a tick: an evaluation is three Redis
	// round trips, however many of its participants changed.
	for conf, due := range confs {
		if due {
			mg.evaluate(ctx, conf, now)
		}
	}
}

// mediaTimeout ends a participant whose endpoint went silent: BYE to the
// endpoint and to the node.
func (mg *Manager) mediaTimeout(ctx context.Context, s *session, conf string, silent time.Duration) {
	mg.m.mediaTimeouts.Inc()
	mg.log.Info().Str("call_id", s.callID).Str("conf_id", conf).Dur("silent", silent).
		Msg("participant ended: no RTP from its endpoint for media_timeout")
	if mg.ender == nil || mg.ender.EndCalls(ctx, func(id, _ string) bool { return id == s.callID }, "media timeout") == 0 {
		// Not a dialog the proxy holds (or already gone): free it anyway.
		mg.Ended(s.callID)
	}
}

// listen reacts at once to "conf-end <id>" on the events channel
// (sipedgectl conf end, or another instance that decided an end): from the
// process's shared subscription (Options.ConfEnds), or without one from a
// subscription of its own.
func (mg *Manager) listen(ctx context.Context) {
	if ends := mg.opts.ConfEnds; ends != nil {
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
	sub := mg.opts.Redis.Subscribe(ctx, mg.opts.Keys.Events())
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			if conf, ok := keys.ParseConfEnd(msg.Payload); ok {
				mg.poke(conf)
			}
		}
	}
}
