package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/sipedge/sipedge/internal/view"
	"github.com/sipedge/sipedge/ring"
)

func putView(t *testing.T, mr *miniredis.Miniredis, d view.Doc) {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	mr.Set(k.View(d.Instance), string(b))
}

// Issue 10 item 2: a node whose probes fail on a live instance is shown
// down (and on which instance) and is never the ring's choice; with no
// live instance the note says probes are assumed up.
func TestNodes_ProbeDownOnAnInstanceIsShownAndNeverChosen(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "n1", "127.0.0.1:5071", "100")
	putNode(mr, "n2", "127.0.0.1:5072", "100")
	lookup := func() map[string]int {
		chosen := map[string]int{}
		for i := 0; i < 50; i++ {
			var r lookupResult
			out, _, err := ctl(t, mr, "--json", "ring", "lookup", "conf"+strconv.Itoa(i))
			if err != nil || json.Unmarshal([]byte(out), &r) != nil {
				t.Fatalf("ring lookup: %v %s", err, out)
			}
			chosen[r.Node]++
		}
		return chosen
	}
	if c := lookup(); c["n2"] == 0 || c["n1"] == 0 {
		t.Fatalf("without views both nodes should be chosen for some keys: %v", c)
	}
	putInstance(mr, "a", time.Now())
	putView(t, mr, view.Doc{Instance: "a", Nodes: []view.Node{
		{Name: "n1", Healthy: true, Eligible: true, State: "normal"},
		{Name: "n2", Healthy: false, Reason: ring.ReasonProbeDown, State: "normal"},
	}})
	if c := lookup(); c["n2"] != 0 || c["n1"] != 50 {
		t.Fatalf("n2 fails its probes on instance a yet was chosen: %v", c)
	}
	var doc struct {
		Nodes []nodeRow `json:"nodes"`
		Note  string    `json:"note"`
	}
	out := mustCtl(t, mr, "--json", "nodes", "list")
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	n2 := doc.Nodes[1]
	if n2.Name != "n2" || n2.Healthy || n2.Eligible || strings.Join(n2.DownOn, ",") != "a" || !strings.Contains(n2.Reason, "probe down (on a)") {
		t.Fatalf("n2 row %+v", n2)
	}
	if !strings.Contains(doc.Note, "probes of a") {
		t.Errorf("note %q", doc.Note)
	}
	table := mustCtl(t, mr, "nodes", "list")
	if !strings.Contains(table, "down") || !strings.Contains(table, "probe down (on a)") {
		t.Errorf("table:\n%s", table)
	}
	// A stopped instance's view no longer counts.
	putInstance(mr, "a", time.Now().Add(-time.Hour))
	if c := lookup(); c["n2"] == 0 {
		t.Errorf("the view of a dead instance still excludes n2: %v", c)
	}
}
