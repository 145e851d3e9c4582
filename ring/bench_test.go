package ring

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/serialx/hashring"
)

// impl is a consistent hash under comparison (SPEC §8): ours, and
// serialx/hashring, a public weighted ketama ring (MD5, one virtual point per
// unit of weight, so weight 100 means 100 points per node).
type impl struct {
	name  string
	build func(ms []Member) func(key string) (string, bool)
}

var impls = []impl{
	{"rendezvous", func(ms []Member) func(string) (string, bool) { return New(ms).Lookup }},
	{"serialx-hashring", func(ms []Member) func(string) (string, bool) {
		w := make(map[string]int, len(ms))
		for _, m := range ms {
			w[m.Name] = int(m.Weight)
		}
		return hashring.NewWithWeights(w).GetNode
	}},
}

// quality measures, over testKeys keys, max/mean keys per member and the
// fraction of keys moved when the first member is removed (ideal 1/n), and
// counts moved keys that did not belong to the removed member (ideal 0).
func quality(t testing.TB, im impl, ms []Member) (maxMean, moved float64, strays int) {
	lookup := im.build(ms)
	before := make([]string, testKeys)
	c := map[string]int{}
	for i := range before {
		before[i], _ = lookup(confKey(i))
		c[before[i]]++
	}
	most := 0
	for _, v := range c {
		most = max(most, v)
	}
	maxMean = float64(most) / (float64(testKeys) / float64(len(ms)))
	after := im.build(slices.Clone(ms[1:]))
	n := 0
	for i := range before {
		if got, _ := after(confKey(i)); got != before[i] {
			n++
			if before[i] != ms[0].Name {
				strays++
			}
		}
	}
	return maxMean, float64(n) / testKeys, strays
}

// TestCompare_Quality logs the placement quality of both implementations on
// the same keys (the numbers go to BENCHMARKS.md). Only ours is asserted;
// the other library is measured, not judged.
func TestCompare_Quality(t *testing.T) {
	if testing.Short() {
		t.Skip("measures 100k keys per case")
	}
	for _, n := range []int{10, 100} {
		for _, im := range impls {
			t.Run(fmt.Sprintf("%s/%d nodes", im.name, n), func(t *testing.T) {
				maxMean, moved, strays := quality(t, im, equalMembers(n, "node-"))
				t.Logf("max/mean %.3f, moved on removal %.4f (ideal %.4f, %.2f× ideal), keys moved between survivors %d",
					maxMean, moved, 1/float64(n), moved*float64(n), strays)
				if im.name == "rendezvous" && strays != 0 {
					t.Errorf("%d keys moved between surviving nodes", strays)
				}
			})
		}
	}
	for _, im := range impls {
		t.Run(im.name+"/weights 100,200,300", func(t *testing.T) {
			ms := []Member{{"a", 100}, {"b", 200}, {"c", 300}}
			lookup := im.build(ms)
			c := map[string]int{}
			for i := range testKeys {
				name, _ := lookup(confKey(i))
				c[name]++
			}
			for _, m := range ms {
				want := m.Weight / 600
				t.Logf("%s: share %.4f, want %.4f (error %+.1f%%)", m.Name, float64(c[m.Name])/testKeys, want,
					100*(float64(c[m.Name])/testKeys-want)/want)
			}
		})
	}
}

func BenchmarkLookup(b *testing.B) {
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = confKey(i)
	}
	for _, n := range []int{10, 100} {
		for _, im := range impls {
			b.Run(fmt.Sprintf("%s/nodes=%d", im.name, n), func(b *testing.B) {
				ms := equalMembers(n, "node-")
				maxMean, moved, _ := quality(b, im, ms)
				lookup := im.build(ms)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					_, _ = lookup(keys[i&4095])
					i++
				}
				b.ReportMetric(maxMean, "max/mean")
				b.ReportMetric(moved*float64(n), "moved/ideal")
			})
		}
	}
}

// BenchmarkLookup_DistinctWeights is the worst case: every member has its
// own weight, so every member needs a log (BenchmarkLookup takes one).
func BenchmarkLookup_DistinctWeights(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ms := equalMembers(n, "node-")
			for i := range ms {
				ms[i].Weight = float64(50 + i)
			}
			r := New(ms)
			keys := make([]string, 1024)
			for i := range keys {
				keys[i] = confKey(i)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_, _ = r.Lookup(keys[i&1023])
				i++
			}
		})
	}
}

func BenchmarkSnapshotLookup(b *testing.B) {
	nodes := make([]Node, 10)
	for i := range nodes {
		nodes[i] = Node{Name: fmt.Sprintf("node-%d", i), Addr: "127.0.0.1:5060", Weight: 100, Capable: true}
	}
	s := BuildSnapshot(nodes, nil, time.Now(), HealthOptions{})
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = confKey(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_, _ = s.Lookup(keys[i&1023])
		i++
	}
}
