package proxy

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// dialog is what this instance remembers of a dialog it established: enough
// to end it itself (drain timeout, conference end) with a BYE on both legs.
// Routing never depends on it: any instance routes in-dialog requests from
// the Record-Route alone.
type dialog struct {
	callID, confID, node string
	from                 *sip.FromHeader // caller's From, with its tag
	to                   *sip.ToHeader   // To with the node's tag
	callerContact        sip.Uri
	nodeContact          sip.Uri
	callerHop, nodeHop   hop
	started              time.Time

	cseqCaller atomic.Uint32 // highest CSeq seen from the caller
	cseqNode   atomic.Uint32 // highest CSeq seen from the node
}

// Dialog is the exported view of a dialog held by this instance.
type Dialog struct {
	CallID, ConfID, Node string
	Started              time.Time
}

const dialogShards = 32

// dialogSet is a sharded map keyed by Call-ID, so the per-call hot path
// takes no global lock.
type dialogSet struct {
	seed   maphash.Seed
	once   sync.Once
	shards [dialogShards]struct {
		mu    sync.Mutex
		items map[string]*dialog
	}
	n   atomic.Int64
	ttl time.Duration
}

func (d *dialogSet) shard(id string) int {
	d.once.Do(func() { d.seed = maphash.MakeSeed() })
	return int(maphash.String(d.seed, id) % dialogShards)
}

func (d *dialogSet) Add(dl *dialog) {
	s := &d.shards[d.shard(dl.callID)]
	s.mu.Lock()
	if s.items == nil {
		s.items = make(map[string]*dialog)
	}
	if _, dup := s.items[dl.callID]; !dup {
		d.n.Add(1)
	}
	s.items[dl.callID] = dl
	s.mu.Unlock()
}

func (d *dialogSet) Get(callID string) *dialog {
	s := &d.shards[d.shard(callID)]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.items[callID]
}

// Remove reports whether the dialog was known here.
func (d *dialogSet) Remove(callID string) bool {
	s := &d.shards[d.shard(callID)]
	s.mu.Lock()
	_, ok := s.items[callID]
	if ok {
		delete(s.items, callID)
		d.n.Add(-1)
	}
	s.mu.Unlock()
	return ok
}

func (d *dialogSet) Len() int { return int(d.n.Load()) }

// Select returns the dialogs for which keep is true.
func (d *dialogSet) Select(keep func(*dialog) bool) []*dialog {
	var out []*dialog
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		for _, dl := range s.items {
			if keep(dl) {
				out = append(out, dl)
			}
		}
		s.mu.Unlock()
	}
	return out
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
			for _, dl := range d.Select(func(dl *dialog) bool { return now.Sub(dl.started) > ttl }) {
				d.Remove(dl.callID)
			}
		}
	}
}

// noteCSeq remembers the highest CSeq each side used, so a BYE sipedge
// sends itself is accepted as newer than anything that side saw.
func (dl *dialog) noteCSeq(fromCaller bool, n uint32) {
	c := &dl.cseqNode
	if fromCaller {
		c = &dl.cseqCaller
	}
	for {
		cur := c.Load()
		if n <= cur || c.CompareAndSwap(cur, n) {
			return
		}
	}
}
