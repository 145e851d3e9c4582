package proxy

import (
	"context"
	"hash/maphash"
	"maps"
	"strings"
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
	callerTag, nodeTag   string          // From tag of the caller, To tag the node chose (named by dialogKey)
	from                 *sip.FromHeader // caller's From, with its tag
	to                   *sip.ToHeader   // To with the node's tag
	callerContact        sip.Header      // each leg's Contact, read when sipedge sends in the dialog (contact.go)
	nodeContact          sip.Header
	callerHop, nodeHop   hop
	callerAt, nodeAt     listenRef // the listen address each leg uses (byefrom.go)
	started              time.Time

	cseqCaller atomic.Uint32 // highest CSeq seen from the caller
	cseqNode   atomic.Uint32 // highest CSeq seen from the node

	// first backs its Call-ID's list in the dialog set while it is the
	// only dialog of that Call-ID (almost always): no list of its own.
	first [1]*dialog
}

// Dialog is the exported view of a dialog held by this instance.
type Dialog struct {
	CallID, ConfID, Node string
	Started              time.Time
}

const dialogShards = 32

// dialogKey names a dialog by its Call-ID and both tags (RFC 3261 §12):
// the caller's From tag first, then the tag the node put in To.
func dialogKey(callID, callerTag, nodeTag string) string {
	return callID + "\x1f" + callerTag + "\x1f" + nodeTag
}

// isKey reports whether key is dl's dialogKey, without building it.
func (dl *dialog) isKey(key string) bool {
	id, ct, nt := dl.callID, dl.callerTag, dl.nodeTag
	if len(key) != len(id)+len(ct)+len(nt)+2 {
		return false
	}
	rest, ok := strings.CutPrefix(key, id)
	if !ok || rest[0] != 0x1f {
		return false
	}
	rest, ok = strings.CutPrefix(rest[1:], ct)
	return ok && rest[0] == 0x1f && rest[1:] == nt
}

// dialogSet is a sharded map keyed by dialogKey, so the per-call hot path
// takes no global lock. It is the truth for the dialogs this instance set
// up: the counts in Redis are derived from it (Holdings).
type dialogSet struct {
	seed   maphash.Seed
	once   sync.Once
	shards [dialogShards]struct {
		mu    sync.Mutex
		items map[string][]*dialog // by Call-ID: almost always one dialog each
	}
	n   atomic.Int64
	ttl time.Duration

	cmu   sync.Mutex           // guards confs and nodes, taken once per dialog start or end
	confs map[string]confCount // conference id -> dialogs held here
	nodes map[string]int       // node name -> dialogs held here
}

// confCount is what this instance holds of one conference.
type confCount struct {
	n    int
	node string // the node of the latest of them
}

// shard hashes the Call-ID only, so both orders of the tags land together.
func (d *dialogSet) shard(callID string) int {
	d.once.Do(func() { d.seed = maphash.MakeSeed() })
	return int(maphash.String(d.seed, callID) % dialogShards)
}

// Add records dl; it reports false (and changes nothing) when a dialog
// with the same Call-ID and tags is already held (a retransmitted 2xx).
func (d *dialogSet) Add(dl *dialog) bool {
	if dl.callerTag == "" && dl.from != nil {
		dl.callerTag = tagParam(dl.from.Params)
	}
	if dl.nodeTag == "" && dl.to != nil {
		dl.nodeTag = tagParam(dl.to.Params)
	}
	s := &d.shards[d.shard(dl.callID)]
	s.mu.Lock()
	if s.items == nil {
		s.items = make(map[string][]*dialog)
	}
	dup := false
	list := s.items[dl.callID]
	for _, cur := range list {
		dup = dup || (cur.callerTag == dl.callerTag && cur.nodeTag == dl.nodeTag)
	}
	if !dup {
		if len(list) == 0 {
			list = dl.first[:0:1]
		}
		s.items[dl.callID] = append(list, dl)
		d.n.Add(1)
	}
	s.mu.Unlock()
	if !dup {
		d.count(dl, 1)
	}
	return !dup
}

// HasCall reports whether any dialog of callID is held here (the flood
// limits ask it of an INVITE whose transaction ended: answered or not).
func (d *dialogSet) HasCall(callID string) bool {
	s := &d.shards[d.shard(callID)]
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items[callID]) > 0
}

// Match finds the dialog a request belongs to from its Call-ID, From tag
// and To tag, whichever side sent it; nil if none is held here. It
// allocates nothing: it runs for every in-dialog request.
func (d *dialogSet) Match(callID, fromTag, toTag string) *dialog {
	if callID == "" || fromTag == "" || toTag == "" {
		return nil
	}
	s := &d.shards[d.shard(callID)]
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, dl := range s.items[callID] {
		if (dl.callerTag == fromTag && dl.nodeTag == toTag) || (dl.callerTag == toTag && dl.nodeTag == fromTag) {
			return dl
		}
	}
	return nil
}

// Remove forgets dl; it reports whether dl was still held, so of two
// concurrent ends (a BYE from each side, a replay) exactly one wins.
func (d *dialogSet) Remove(dl *dialog) bool {
	s := &d.shards[d.shard(dl.callID)]
	s.mu.Lock()
	ok := false
	list := s.items[dl.callID]
	for i, cur := range list {
		if cur == dl {
			ok = true
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if ok {
		if len(list) == 0 {
			delete(s.items, dl.callID)
		} else {
			s.items[dl.callID] = list
		}
		d.n.Add(-1)
	}
	s.mu.Unlock()
	if ok {
		d.count(dl, -1)
	}
	return ok
}

// RemoveKey forgets the dialog named key (a dialogKey), if held.
func (d *dialogSet) RemoveKey(key string) *dialog {
	callID, _, _ := strings.Cut(key, "\x1f")
	s := &d.shards[d.shard(callID)]
	s.mu.Lock()
	var dl *dialog
	for _, cur := range s.items[callID] {
		if cur.isKey(key) {
			dl = cur
		}
	}
	s.mu.Unlock()
	if dl == nil || !d.Remove(dl) {
		return nil
	}
	return dl
}

func (d *dialogSet) count(dl *dialog, delta int) {
	d.cmu.Lock()
	defer d.cmu.Unlock()
	if d.confs == nil {
		d.confs, d.nodes = map[string]confCount{}, map[string]int{}
	}
	if dl.confID != "" {
		c := d.confs[dl.confID]
		if c.n += delta; c.n > 0 {
			if delta > 0 {
				c.node = dl.node
			}
			d.confs[dl.confID] = c
		} else {
			delete(d.confs, dl.confID)
		}
	}
	if dl.node != "" {
		if n := d.nodes[dl.node] + delta; n > 0 {
			d.nodes[dl.node] = n
		} else {
			delete(d.nodes, dl.node)
		}
	}
}

// Conf is the number of dialogs of conference id held here and the node
// of the latest of them.
func (d *dialogSet) Conf(id string) (int, string) {
	d.cmu.Lock()
	defer d.cmu.Unlock()
	c := d.confs[id]
	return c.n, c.node
}

// NodeDialogs is the number of dialogs on node held here.
func (d *dialogSet) NodeDialogs(node string) int {
	d.cmu.Lock()
	defer d.cmu.Unlock()
	return d.nodes[node]
}

// counts copies the per-conference and per-node counts.
func (d *dialogSet) counts() (confs map[string]confCount, nodes map[string]int) {
	d.cmu.Lock()
	defer d.cmu.Unlock()
	return maps.Clone(d.confs), maps.Clone(d.nodes)
}

func (d *dialogSet) Len() int { return int(d.n.Load()) }

// Select returns the dialogs for which keep is true.
func (d *dialogSet) Select(keep func(*dialog) bool) []*dialog {
	var out []*dialog
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		for _, list := range s.items {
			for _, dl := range list {
				if keep(dl) {
					out = append(out, dl)
				}
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
				d.Remove(dl)
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
