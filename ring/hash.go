package ring

import (
	"cmp"
	"math"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Member is one node as the hash sees it: a name and a relative weight.
type Member struct {
	Name   string
	Weight float64
}

// Score is one member's score for one key; the highest score wins.
type Score struct {
	Name   string
	Weight float64
	Score  float64
}

// Ring places keys on members by weighted rendezvous hashing (see the
// package doc). It is immutable and safe for concurrent use; a nil *Ring is
// an empty ring.
type Ring struct {
	// members are grouped by weight, largest first, and by name within a
	// group; weight-0 members come last and belong to no group.
	members []member
	groups  []group
}

type member struct {
	name   string
	weight float64 // finite and >= 0; 0 never wins
	seed   uint64  // xxhash of the name, computed once here not per lookup
}

// group is a run members[start:end] of one positive weight. Within a group
// the score grows with the hash, so only the group's best hash needs the
// logarithm: with equal weights (the usual case) a lookup takes one log.
type group struct {
	weight     float64
	start, end int
}

// New builds a ring. The order of members does not matter. A weight that is
// negative, NaN or infinite counts as 0 (present but never chosen); when a
// name appears twice its largest weight is kept, so the result still does
// not depend on order.
func New(members []Member) *Ring {
	ms := make([]member, 0, len(members))
	for _, m := range members {
		w := m.Weight
		if !(w > 0) || math.IsInf(w, 1) {
			w = 0
		}
		ms = append(ms, member{name: m.Name, weight: w, seed: xxhash.Sum64String(m.Name)})
	}
	// Dedupe by name first (largest weight kept), then group by weight.
	slices.SortFunc(ms, func(a, b member) int {
		return cmp.Or(cmp.Compare(a.name, b.name), cmp.Compare(b.weight, a.weight))
	})
	ms = slices.CompactFunc(ms, func(a, b member) bool { return a.name == b.name })
	slices.SortStableFunc(ms, func(a, b member) int { return cmp.Compare(b.weight, a.weight) })
	r := &Ring{members: slices.Clip(ms)}
	for i := 0; i < len(ms) && ms[i].weight > 0; {
		j := i + 1
		for j < len(ms) && ms[j].weight == ms[i].weight {
			j++
		}
		r.groups = append(r.groups, group{weight: ms[i].weight, start: i, end: j})
		i = j
	}
	return r
}

// Len is the number of distinct members, including those of weight 0.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.members)
}

// Lookup returns the member that key maps to; ok is false when the ring is
// empty or every weight is 0. It does not allocate.
func (r *Ring) Lookup(key string) (name string, ok bool) {
	if i := r.best(xxhash.Sum64String(key)); i >= 0 {
		return r.members[i].name, true
	}
	return "", false
}

// LookupExcluding returns the member key maps to once the members named in
// exclude are taken out: the next node of the ring for key, the one a
// failed-over request goes to (Kamailio's ds_next_dst). Rendezvous hashing
// makes it the runner-up of Scores, so every instance agrees on it. It
// does not allocate.
func (r *Ring) LookupExcluding(key string, exclude []string) (name string, ok bool) {
	if i := r.bestExcluding(xxhash.Sum64String(key), exclude); i >= 0 {
		return r.members[i].name, true
	}
	return "", false
}

// best returns the index of the winning member, or -1. Equal scores (a
// chance of about 2^-52 per pair) go to the smaller name, which keeps the
// answer independent of the order members were given in.
func (r *Ring) best(kh uint64) int {
	if r == nil {
		return -1
	}
	best, top := -1, 0.0
	for _, g := range r.groups {
		gi, gu := g.start, unit(kh, &r.members[g.start])
		for i := g.start + 1; i < g.end; i++ {
			if u := unit(kh, &r.members[i]); u > gu {
				gi, gu = i, u
			}
		}
		s := weigh(g.weight, gu)
		if s > top || (s == top && best >= 0 && r.members[gi].name < r.members[best].name) {
			best, top = gi, s
		}
	}
	return best
}

// bestExcluding is best over the members not named in exclude; a loop of
// its own so that best, on every lookup, pays nothing for it.
func (r *Ring) bestExcluding(kh uint64, exclude []string) int {
	if r == nil {
		return -1
	}
	best, top := -1, 0.0
	for _, g := range r.groups {
		gi, gu := -1, uint64(0)
		for i := g.start; i < g.end; i++ {
			if slices.Contains(exclude, r.members[i].name) {
				continue
			}
			if u := unit(kh, &r.members[i]); gi < 0 || u > gu {
				gi, gu = i, u
			}
		}
		if gi < 0 {
			continue
		}
		s := weigh(g.weight, gu)
		if s > top || (s == top && best >= 0 && r.members[gi].name < r.members[best].name) {
			best, top = gi, s
		}
	}
	return best
}

// Scores returns every member with its score for key, best first (equal
// scores, such as the zeros of weight-0 members, by name). It allocates and
// is meant for explaining a placement, not for the hot path.
func (r *Ring) Scores(key string) []Score {
	if r == nil {
		return nil
	}
	kh := xxhash.Sum64String(key)
	out := make([]Score, len(r.members))
	for i := range r.members {
		m := &r.members[i]
		s := 0.0
		if m.weight > 0 {
			s = weigh(m.weight, unit(kh, m))
		}
		out[i] = Score{Name: m.name, Weight: m.weight, Score: s}
	}
	slices.SortFunc(out, func(a, b Score) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Members returns the members in name order.
func (r *Ring) Members() []Member {
	if r == nil {
		return nil
	}
	out := make([]Member, len(r.members))
	for i, m := range r.members {
		out[i] = Member{Name: m.name, Weight: m.weight}
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// sameMembers reports whether r and o have the same names and weights, in
// which case they place every key identically and o need not replace r.
func (r *Ring) sameMembers(o *Ring) bool {
	if r.Len() != o.Len() {
		return false
	}
	for i := range r.Len() {
		a, b := &r.members[i], &o.members[i]
		if a.name != b.name || a.weight != b.weight {
			return false
		}
	}
	return true
}

// unit draws u in (0,1) from the key and member hashes, as the 52-bit
// integer U with u = (U + 0.5) / 2^52 (so comparing U compares u).
func unit(kh uint64, m *member) uint64 { return mix64(kh^m.seed) >> 12 }

// weigh is the score -weight / ln(u); see the package doc for why the
// highest score wins with probability weight/Σweights. u is exactly
// representable and never 0 (ln = -Inf) nor 1 (ln = 0).
func weigh(weight float64, U uint64) float64 {
	return -weight / math.Log((float64(U)+0.5)*0x1p-52)
}

// mix64 is the splitmix64 finalizer: a bijection with full avalanche, so
// the xor of two hashes becomes an independent-looking 64-bit value.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
