package recent

import (
	"strconv"
	"testing"
	"time"
)

func TestSet_ForgetsAfterKeep(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cases := []struct {
		name string
		adds []struct {
			key string
			at  time.Duration
		}
		check time.Duration // time of a last add of "probe", which expires older keys
		want  map[string]bool
	}{
		{
			name: "within keep",
			adds: []struct {
				key string
				at  time.Duration
			}{{"a", 0}, {"b", 30 * time.Second}},
			check: 60 * time.Second,
			want:  map[string]bool{"a": true, "b": true},
		},
		{
			name: "older than keep",
			adds: []struct {
				key string
				at  time.Duration
			}{{"a", 0}, {"b", 30 * time.Second}},
			check: 61 * time.Second,
			want:  map[string]bool{"a": false, "b": true},
		},
		{
			name: "added again keeps the newer time",
			adds: []struct {
				key string
				at  time.Duration
			}{{"a", 0}, {"a", 50 * time.Second}},
			check: 70 * time.Second,
			want:  map[string]bool{"a": true},
		},
		{
			name: "everything expires",
			adds: []struct {
				key string
				at  time.Duration
			}{{"a", 0}, {"b", time.Second}},
			check: 5 * time.Minute,
			want:  map[string]bool{"a": false, "b": false},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := New(time.Minute)
			for _, a := range tc.adds {
				r.Add(a.key, t0.Add(a.at))
			}
			r.Add("probe", t0.Add(tc.check))
			for k, want := range tc.want {
				if got := r.Has(k); got != want {
					t.Errorf("has(%q) = %v, want %v", k, got, want)
				}
			}
		})
	}
}

// TestSet_BoundedUnderSteadyLoad: at a steady rate the set holds
// about rate x keep keys, and the queue does not grow without bound.
func TestSet_BoundedUnderSteadyLoad(t *testing.T) {
	r := New(time.Second)
	t0 := time.Unix(0, 0)
	for i := 0; i < 100000; i++ {
		r.Add(strconv.Itoa(i), t0.Add(time.Duration(i)*time.Millisecond)) // 1000/s
	}
	if n := r.Len(); n < 1000 || n > 1002 {
		t.Errorf("len = %d, want about 1000 (rate x keep)", n)
	}
	if q := len(r.queue) - r.head; q > 2100 {
		t.Errorf("queue holds %d entries, want about 1000", q)
	}
}

// BenchmarkSet_Add is the cost a call end pays to remember its
// Call-ID with 60 000 ended in the last minute (1000 calls/s).
func BenchmarkSet_Add(b *testing.B) {
	r := New(time.Minute)
	t0 := time.Unix(0, 0)
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = "call-" + strconv.Itoa(i)
	}
	for i := 0; i < 60000; i++ {
		r.Add(keys[i%len(keys)], t0.Add(time.Duration(i)*time.Millisecond))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Add(keys[i%len(keys)], t0.Add(time.Duration(60000+i)*time.Millisecond))
	}
}

func TestSet_Remove(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := New(time.Minute)
	s.Add("a", t0)
	s.Add("b", t0)
	s.Remove("a")
	s.Remove("never added")
	if s.Has("a") || !s.Has("b") {
		t.Fatalf("after Remove(a): Has(a)=%v Has(b)=%v, want false true", s.Has("a"), s.Has("b"))
	}
	// Added again after Remove, the old queued entry must not expire it.
	s.Add("a", t0.Add(50*time.Second))
	s.Add("probe", t0.Add(61*time.Second))
	if !s.Has("a") || s.Has("b") {
		t.Errorf("at 61 s: Has(a)=%v Has(b)=%v, want true false", s.Has("a"), s.Has("b"))
	}
}
