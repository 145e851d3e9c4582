package admission

import (
	"testing"

	"github.com/sipedge/sipedge/ring"
)

// fakeNodes is a NodeView with fixed answers.
type fakeNodes struct {
	nodes   map[string]ring.Node
	healthy map[string]bool
	lookup  string // node every key hashes to; "" = empty ring
}

func (f fakeNodes) Lookup(string) (ring.Node, bool) {
	n, ok := f.nodes[f.lookup]
	return n, ok && f.lookup != ""
}
func (f fakeNodes) Node(name string) (ring.Node, bool) { n, ok := f.nodes[name]; return n, ok }
func (f fakeNodes) Healthy(name string) bool           { return f.healthy[name] }

func TestDecide(t *testing.T) {
	n1 := ring.Node{Name: "n1", Addr: "127.0.0.1:5071"}
	n2 := ring.Node{Name: "n2", Addr: "127.0.0.1:5072"}
	both := map[string]ring.Node{"n1": n1, "n2": n2}
	cases := []struct {
		name      string
		req       Request
		nodes     fakeNodes
		sticky    string
		admit     bool
		node      string
		placement string
	}{
		{"new conference goes by ring", Request{Method: "INVITE", ConfID: "c1"},
			fakeNodes{both, map[string]bool{"n1": true, "n2": true}, "n2"}, "", true, "n2", PlacementRing},
		{"active conference sticks to its node", Request{Method: "INVITE", ConfID: "c1"},
			fakeNodes{both, map[string]bool{"n1": true, "n2": true}, "n2"}, "n1", true, "n1", PlacementSticky},
		{"sticky node gone falls back to ring", Request{Method: "INVITE", ConfID: "c1"},
			fakeNodes{map[string]ring.Node{"n2": n2}, map[string]bool{"n2": true}, "n2"}, "n1", true, "n2", PlacementRing},
		{"sticky node dead falls back to ring", Request{Method: "INVITE", ConfID: "c1"},
			fakeNodes{both, map[string]bool{"n2": true}, "n2"}, "n1", true, "n2", PlacementRing},
		{"register ignores conference placement", Request{Method: "REGISTER", AOR: "alice@example.com", ConfID: "c1"},
			fakeNodes{both, map[string]bool{"n1": true, "n2": true}, "n2"}, "n1", true, "n2", PlacementRing},
		{"subscribe by AOR", Request{Method: "SUBSCRIBE", AOR: "bob@example.com"},
			fakeNodes{both, map[string]bool{"n1": true, "n2": true}, "n1"}, "", true, "n1", PlacementRing},
		{"no node at all: 503", Request{Method: "INVITE", ConfID: "c1"},
			fakeNodes{both, map[string]bool{}, ""}, "", false, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := Decide(tc.req, State{Nodes: tc.nodes, Sticky: tc.sticky, RetryAfter: 30})
			if v.Admit != tc.admit {
				t.Fatalf("admit = %v, want %v (%+v)", v.Admit, tc.admit, v)
			}
			if !tc.admit {
				if v.Code != 503 || v.Reason != ReasonNoNode || v.RetryAfter != 30 {
					t.Errorf("rejection = %d %q retry %d, want 503 %q retry 30", v.Code, v.Reason, v.RetryAfter, ReasonNoNode)
				}
				return
			}
			if v.Node.Name != tc.node || v.Placement != tc.placement {
				t.Errorf("node %s via %s, want %s via %s", v.Node.Name, v.Placement, tc.node, tc.placement)
			}
		})
	}
}

func TestRequestKey(t *testing.T) {
	cases := []struct {
		req  Request
		want string
	}{
		{Request{Method: "INVITE", ConfID: "c1", AOR: "a@b"}, "c1"},
		{Request{Method: "REGISTER", ConfID: "", AOR: "a@b"}, "a@b"},
		{Request{Method: "SUBSCRIBE", ConfID: "x", AOR: "a@b"}, "a@b"},
		{Request{Method: "MESSAGE", ConfID: "c9", AOR: "a@b"}, "c9"},
	}
	for _, tc := range cases {
		if got := tc.req.Key(); got != tc.want {
			t.Errorf("%s key = %q, want %q", tc.req.Method, got, tc.want)
		}
	}
}
