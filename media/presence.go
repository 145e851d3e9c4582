package media

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sipedge/sipedge/media/policy"
)

// The conference rules (policy.Step) need only five numbers of a
// snapshot: how many participants, how many have keep-alive if-multiple,
// and whether a present Host with keep-alive yes (normal; adp or admin) or
// if-multiple is among them. Each participant adds its share of those to
// sipedge:participant_counts:<conf>, per instance run, in the same script
// that writes its record; an evaluation reads the counters, not the
// records: its cost does not grow with the conference.

// Counter indexes of a share.
const (
	cntAll        = iota // participants
	cntIfMultiple        // keep-alive if-multiple, any role or presence
	cntHostYes           // present Host, keep-alive yes, kind normal
	cntHostYesADP        // present Host, keep-alive yes, kind adp or admin
	cntHostIfMult        // present Host, keep-alive if-multiple
	numCounters
)

// counterNames are the field suffixes in sipedge:participant_counts:<conf>.
var counterNames = [numCounters]string{"n", "m", "hy", "ho", "hm"}

type counts [numCounters]int64

// shareOf is what one participant adds to the counters. It mirrors
// policy.KeepsAlive case by case.
func shareOf(p policy.Participant) counts {
	var c counts
	c[cntAll] = 1
	ka := p.KeepAlive
	if ka == "" {
		ka = policy.DefaultKeepAlive(p.Kind)
	}
	if ka == policy.KeepIfMultiple {
		c[cntIfMultiple] = 1
	}
	if p.Role != policy.RoleHost || !p.Present {
		return c
	}
	switch ka {
	case policy.KeepYes:
		if p.Kind == policy.KindADP || p.Kind == policy.KindAdmin {
			c[cntHostYesADP] = 1
		} else {
			c[cntHostYes] = 1
		}
	case policy.KeepIfMultiple:
		c[cntHostIfMult] = 1
	}
	return c
}

// encodeShare is a share as the scripts read it: "<owner>|n,m,hy,ho,hm".
func encodeShare(owner string, c counts) string {
	var b strings.Builder
	b.WriteString(owner)
	b.WriteByte('|')
	for i, v := range c {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(v, 10))
	}
	return b.String()
}

// parseCounts sums the fields <owner>:<counter> of the counters hash by
// owner. Unknown or bad fields are skipped.
func parseCounts(raw map[string]string) map[string]counts {
	out := map[string]counts{}
	for f, v := range raw {
		i := strings.LastIndexByte(f, ':')
		if i < 0 {
			continue
		}
		owner, name := f[:i], f[i+1:]
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		for k, cn := range counterNames {
			if cn == name {
				c := out[owner]
				c[k] += n
				out[owner] = c
			}
		}
	}
	return out
}

// snapshotOf builds a participant list on which policy.Step decides
// exactly as on the full one the counters sum up: the same number of
// participants as far as the rules tell (none, one, more), at least two
// if-multiple ones when there are, and a present Host of each kind that
// keeps a conference alive when there is one. Its size is at most 4.
func snapshotOf(c counts) []policy.Participant {
	for i := range c {
		c[i] = max(c[i], 0) // a counter never goes below zero; if it did, treat it as none
	}
	out := make([]policy.Participant, 0, 4)
	add := func(role policy.Role, kind policy.Kind, ka policy.KeepAlive, present bool) {
		out = append(out, policy.Participant{ID: "n" + strconv.Itoa(len(out)), Role: role, Kind: kind, KeepAlive: ka, Present: present})
	}
	if c[cntHostYes] > 0 {
		add(policy.RoleHost, policy.KindNormal, policy.KeepYes, true)
	}
	if c[cntHostYesADP] > 0 {
		add(policy.RoleHost, policy.KindADP, policy.KeepYes, true)
	}
	multiple := min(c[cntIfMultiple], 2)
	if c[cntHostIfMult] > 0 {
		add(policy.RoleHost, policy.KindADP, policy.KeepIfMultiple, true)
		multiple--
	}
	for ; multiple > 0; multiple-- {
		add(policy.RoleGuest, policy.KindNormal, policy.KeepIfMultiple, false)
	}
	for int64(len(out)) < min(c[cntAll], 2) {
		add(policy.RoleGuest, policy.KindNormal, policy.KeepNo, false)
	}
	return out
}

// liveness remembers, for a while, whether another instance's run is alive:
// its heartbeat is fresh and its hash names that run's media_boot.
type liveness struct {
	mu      sync.Mutex
	entries map[string]liveEntry // by owner (<instance>/<boot>)
}

type liveEntry struct {
	alive bool
	at    time.Time // when it was read
}

// liveFor is how long a liveness read is reused.
const liveFor = time.Second

// splitOwner splits <instance>/<boot>.
func splitOwner(owner string) (instance, boot string) {
	i := strings.LastIndexByte(owner, '/')
	if i < 0 {
		return owner, ""
	}
	return owner[:i], owner[i+1:]
}

func (l *liveness) get(owner string, now time.Time) (alive, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.entries[owner]
	if !found || now.Sub(e.at) >= liveFor || now.Before(e.at) {
		return false, false
	}
	return e.alive, true
}

func (l *liveness) set(owner string, alive bool, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.entries == nil {
		l.entries = map[string]liveEntry{}
	}
	if len(l.entries) > 4096 { // instance runs come and go; never grow without bound
		for k, e := range l.entries {
			if now.Sub(e.at) >= liveFor {
				delete(l.entries, k)
			}
		}
	}
	l.entries[owner] = liveEntry{alive: alive, at: now}
}

// instanceAlive judges an instance hash's heartbeat and media_boot fields.
func instanceAlive(heartbeat, mediaBoot, boot string, now time.Time, timeout time.Duration) bool {
	hb := msTime(heartbeat)
	if hb.IsZero() || mediaBoot != boot {
		return false
	}
	return now.Sub(hb) <= timeout
}
