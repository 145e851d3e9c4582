package ring

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

const testKeys = 100_000

func confKey(i int) string { return fmt.Sprintf("conf-%d", i) }

func equalMembers(n int, prefix string) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{Name: fmt.Sprintf("%s%d", prefix, i), Weight: 100}
	}
	return ms
}

// place maps every test key to its member.
func place(t testing.TB, r *Ring, n int) []string {
	out := make([]string, n)
	for i := range out {
		name, ok := r.Lookup(confKey(i))
		if !ok {
			t.Fatalf("no member for %s", confKey(i))
		}
		out[i] = name
	}
	return out
}

func counts(placed []string) map[string]int {
	c := map[string]int{}
	for _, n := range placed {
		c[n]++
	}
	return c
}

func TestRing_Balance_EqualWeights(t *testing.T) {
	for _, n := range []int{3, 10, 50} {
		t.Run(fmt.Sprintf("%d nodes", n), func(t *testing.T) {
			c := counts(place(t, New(equalMembers(n, "node-")), testKeys))
			if len(c) != n {
				t.Fatalf("%d of %d members got keys", len(c), n)
			}
			mean := float64(testKeys) / float64(n)
			most := 0
			for _, v := range c {
				most = max(most, v)
			}
			t.Logf("max/mean = %.4f", float64(most)/mean)
			if float64(most) > 1.10*mean {
				t.Errorf("busiest member has %d keys, more than 1.10 × mean %.0f", most, mean)
			}
		})
	}
}

func TestRing_Removal_MovesOnlyTheRemovedNodesKeys(t *testing.T) {
	all := equalMembers(10, "node-")
	before := place(t, New(all), testKeys)
	for _, gone := range []int{0, 4, 9} {
		t.Run(all[gone].Name, func(t *testing.T) {
			rest := slices.Delete(slices.Clone(all), gone, gone+1)
			after := place(t, New(rest), testKeys)
			moved := 0
			for i := range after {
				if after[i] == before[i] {
					continue
				}
				moved++
				if before[i] != all[gone].Name {
					t.Fatalf("%s moved from %s to %s, but only %s left", confKey(i), before[i], after[i], all[gone].Name)
				}
			}
			t.Logf("moved %.4f of keys (ideal 0.1)", float64(moved)/testKeys)
			if limit := 1.2 * 0.10 * testKeys; float64(moved) > limit {
				t.Errorf("%d keys moved, more than %.0f", moved, limit)
			}
		})
	}
}

func TestRing_Weights_SharesMatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []float64
	}{
		{"100/200/300", []float64{100, 200, 300}},
		{"50/150", []float64{50, 150}},
		{"fractional 0.5/1.5/2", []float64{0.5, 1.5, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ms []Member
			total := 0.0
			for i, w := range tc.weights {
				ms = append(ms, Member{Name: fmt.Sprintf("w%d", i), Weight: w})
				total += w
			}
			c := counts(place(t, New(ms), testKeys))
			for _, m := range ms {
				want := m.Weight / total
				got := float64(c[m.Name]) / testKeys
				if rel := math.Abs(got-want) / want; rel > 0.05 {
					t.Errorf("%s (weight %g): share %.4f, want %.4f ±5%%", m.Name, m.Weight, got, want)
				}
			}
		})
	}
}

func TestRing_Determinism_OrderDoesNotMatter(t *testing.T) {
	ms := []Member{{"a", 100}, {"b", 50}, {"c", 100}, {"d", 0}, {"e", 300}}
	rev := slices.Clone(ms)
	slices.Reverse(rev)
	shuffled := []Member{ms[2], ms[4], ms[0], ms[3], ms[1]}
	r1, r2, r3 := New(ms), New(rev), New(shuffled)
	for i := range 10_000 {
		k := confKey(i)
		a, _ := r1.Lookup(k)
		b, _ := r2.Lookup(k)
		c, _ := r3.Lookup(k)
		if a != b || a != c {
			t.Fatalf("%s: %s / %s / %s depending on member order", k, a, b, c)
		}
	}
	if !slices.Equal(r1.Scores("x"), r2.Scores("x")) {
		t.Errorf("scores differ with member order")
	}
}

// TestRing_GoldenVectors pins the hash: any change to key hashing, member
// seeds, mixing or scoring moves live conferences when a fleet of mixed
// versions runs, and must show up here first.
func TestRing_GoldenVectors(t *testing.T) {
	r := New([]Member{{"cn1", 100}, {"cn2", 100}, {"cn3", 50}, {"cn4", 200}})
	for _, tc := range []struct{ key, want string }{
		{"conf-0", "cn2"},
		{"conf-1", "cn4"},
		{"conf-2", "cn2"},
		{"conf-42", "cn1"},
		{"conf-1000", "cn4"},
		{"99887766", "cn4"},
		{"alice@example.com", "cn4"},
		{"bob@example.org", "cn2"},
		{"room-blue", "cn3"},
		{"room-red", "cn4"},
		{"", "cn4"},
		{"ünïcode-会议", "cn1"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			if got, _ := r.Lookup(tc.key); got != tc.want {
				t.Errorf("Lookup(%q) = %s, want %s", tc.key, got, tc.want)
			}
		})
	}
}

func TestRing_EmptyAndZeroWeights(t *testing.T) {
	for _, tc := range []struct {
		name    string
		r       *Ring
		wantLen int
	}{
		{"nil ring", nil, 0},
		{"no members", New(nil), 0},
		{"all weight 0", New([]Member{{"a", 0}, {"b", 0}}), 2},
		{"negative and NaN count as 0", New([]Member{{"a", -5}, {"b", math.NaN()}, {"c", math.Inf(1)}}), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if name, ok := tc.r.Lookup("conf-1"); ok {
				t.Errorf("Lookup = %q, want none", name)
			}
			if tc.r.Len() != tc.wantLen {
				t.Errorf("Len = %d, want %d", tc.r.Len(), tc.wantLen)
			}
			for _, s := range tc.r.Scores("conf-1") {
				if s.Score != 0 {
					t.Errorf("%s scores %g, want 0", s.Name, s.Score)
				}
			}
		})
	}
}

func TestRing_ZeroWeightMemberNeverWins(t *testing.T) {
	r := New([]Member{{"a", 100}, {"idle", 0}, {"b", 100}})
	if c := counts(place(t, r, 10_000)); c["idle"] != 0 {
		t.Errorf("weight-0 member got %d keys", c["idle"])
	}
}

func TestRing_DuplicateNamesKeepLargestWeight(t *testing.T) {
	r1 := New([]Member{{"a", 10}, {"b", 100}, {"a", 300}})
	r2 := New([]Member{{"a", 300}, {"a", 10}, {"b", 100}})
	want := []Member{{"a", 300}, {"b", 100}}
	if !slices.Equal(r1.Members(), want) || !slices.Equal(r2.Members(), want) {
		t.Errorf("members %v and %v, want %v", r1.Members(), r2.Members(), want)
	}
}

func TestRing_ScoresBestFirstAgreesWithLookup(t *testing.T) {
	var mixed []Member // many weight groups, several members in some
	for i := range 30 {
		mixed = append(mixed, Member{Name: fmt.Sprintf("m%02d", i), Weight: []float64{100, 100, 37.5, 0.25, 250, 0}[i%6]})
	}
	for _, tc := range []struct {
		name    string
		members []Member
	}{
		{"two weights and an idle member", []Member{{"a", 100}, {"b", 50}, {"c", 100}, {"z", 0}}},
		{"30 members, 5 weights", mixed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(tc.members)
			for i := range 2000 {
				k := confKey(i)
				sc := r.Scores(k)
				if len(sc) != len(tc.members) || sc[len(sc)-1].Score != 0 {
					t.Fatalf("%s: scores %v, want %d with weight-0 last", k, sc, len(tc.members))
				}
				for j := 1; j < len(sc); j++ {
					if sc[j].Score > sc[j-1].Score {
						t.Fatalf("%s: not best first: %v", k, sc)
					}
				}
				if name, _ := r.Lookup(k); name != sc[0].Name {
					t.Fatalf("%s: Lookup %s, Scores puts %s first", k, name, sc[0].Name)
				}
			}
		})
	}
}

func TestRing_LookupDoesNotAllocate(t *testing.T) {
	r := New(equalMembers(10, "node-"))
	allocs := testing.AllocsPerRun(1000, func() { _, _ = r.Lookup("conf-123456") })
	if allocs != 0 {
		t.Errorf("Lookup allocates %.1f times per call", allocs)
	}
}
