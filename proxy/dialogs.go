package proxy

import (
	"context"
	"sync"
	"time"
)

// dialogSet remembers dialogs established through this instance, only to
// report how many are active: routing never depends on it.
type dialogSet struct {
	mu    sync.Mutex
	items map[string]time.Time
	ttl   time.Duration
}

func (d *dialogSet) Add(callID string) {
	d.mu.Lock()
	if d.items == nil {
		d.items = make(map[string]time.Time)
	}
	d.items[callID] = time.Now()
	d.mu.Unlock()
}

// Remove reports whether the dialog was known here.
func (d *dialogSet) Remove(callID string) bool {
	d.mu.Lock()
	_, ok := d.items[callID]
	delete(d.items, callID)
	d.mu.Unlock()
	return ok
}

func (d *dialogSet) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.items)
}

// sweep forgets dialogs whose end was never seen here (their BYE went
// through another instance) once they are older than ttl.
func (d *dialogSet) sweep(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			ttl := d.ttl
			if ttl == 0 {
				ttl = 24 * time.Hour
			}
			d.mu.Lock()
			for id, at := range d.items {
				if now.Sub(at) > ttl {
					delete(d.items, id)
				}
			}
			d.mu.Unlock()
		}
	}
}
