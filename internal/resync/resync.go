// Package resync runs the reload loop every Redis-backed view in sipedge
// uses: reload now, on every message of the events channel, and every
// interval (which also catches plain redis-cli writes that publish nothing).
package resync

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Loop calls reload until ctx is done. reload handles its own errors
// (fail-static views keep their last state); Loop never stops on them.
// go-redis resubscribes by itself after a connection loss, and each
// (re)subscription confirmation triggers a reload too, covering events
// missed meanwhile. A send on kick (buffered, size 1; nil for none) asks
// for a reload from elsewhere.
func Loop(ctx context.Context, rdb redis.UniversalClient, channel string, every time.Duration,
	kick chan struct{}, reload func(context.Context)) {
	if kick == nil {
		kick = make(chan struct{}, 1)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		ps := rdb.Subscribe(ctx, channel)
		defer ps.Close()
		ch := ps.ChannelWithSubscriptions()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-ch:
				if !ok {
					return
				}
				select {
				case kick <- struct{}{}:
				default: // a reload is already pending; it will see this change too
				}
			}
		}
	})
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		reload(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
	}
}
