package app

import (
	"slices"
	"testing"
)

// Issue 8 item 8: an instance follows a rotation of the route secret in
// Redis and never drops a secret it encoded with before the next change.
func TestSecretWatch_NextRoute(t *testing.T) {
	type step struct {
		cur, next, prev string // what Redis holds
		wantCur         string
		wantOld         []string
		wantChanged     bool
	}
	cases := []struct {
		name  string
		start secretWatch
		steps []step
	}{
		{"nothing changes", secretWatch{route: "A"}, []step{
			{"A", "", "", "A", nil, false},
		}},
		{"rotation: next staged, then promoted, then prev dropped", secretWatch{route: "A"}, []step{
			{"A", "B", "", "A", []string{"B"}, true},
			{"B", "", "A", "B", []string{"A"}, true},
			{"B", "", "A", "B", []string{"A"}, false},
			{"B", "", "", "B", []string{"A"}, false}, // the replaced one stays until the next change
			{"C", "", "", "C", []string{"B"}, true},
		}},
		{"redis emptied: keep what is held", secretWatch{route: "A", routeOld: []string{"Z"}}, []step{
			{"", "", "", "A", []string{"Z"}, false},
			{"A", "", "Z", "A", []string{"Z"}, false}, // written back
		}},
		{"redis emptied, another instance made a new secret", secretWatch{route: "A"}, []step{
			{"N", "", "", "N", []string{"A"}, true},
		}},
		{"prev equal to current is not listed", secretWatch{route: "A"}, []step{
			{"A", "A", "A", "A", nil, false},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.start
			for i, s := range tc.steps {
				cur, old, changed := w.nextRoute(s.cur, s.next, s.prev)
				if cur != s.wantCur || !slices.Equal(old, s.wantOld) || changed != s.wantChanged {
					t.Fatalf("step %d (%+v): got %q %q changed=%v, want %q %q changed=%v",
						i, s, cur, old, changed, s.wantCur, s.wantOld, s.wantChanged)
				}
			}
		})
	}
}

func TestSecretWatch_NextNode(t *testing.T) {
	w := secretWatch{nodes: []string{"A"}}
	if _, changed := w.nextNode("A"); changed {
		t.Fatal("same secret reported as a change")
	}
	if _, changed := w.nextNode(""); changed {
		t.Fatal("a missing secret replaced the held one")
	}
	if got, changed := w.nextNode("B"); !changed || !slices.Equal(got, []string{"B", "A"}) {
		t.Fatalf("rotation to B: %q changed=%v, want [B A]", got, changed)
	}
	if got, _ := w.nextNode("C"); !slices.Equal(got, []string{"C", "B"}) {
		t.Fatalf("rotation to C: %q, want [C B]", got)
	}
}

func TestFingerprint_HidesSecret(t *testing.T) {
	if f := fingerprint("s3cr3t"); len(f) != 8 || f == fingerprint("other") {
		t.Fatalf("fingerprint %q", f)
	}
}

func TestSecretWatch_WriteBack(t *testing.T) {
	w := secretWatch{route: "A", routeOld: []string{"N", "P"}}
	if cur, prev := w.writeBack(); cur != "A" || prev != "P" {
		t.Fatalf("writeBack = %q %q, want A P", cur, prev)
	}
	w.nextRoute("B", "", "")
	if cur, prev := w.writeBack(); cur != "B" || prev != "A" {
		t.Fatalf("after rotation writeBack = %q %q, want B A (the replaced one)", cur, prev)
	}
}
