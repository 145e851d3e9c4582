package proxy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipedge/sipedge/ring"
)

func startNamedProxy(t *testing.T, name string, adm Admitter) *Proxy {
	t.Helper()
	px, err := New(Options{Listen: "127.0.0.1:0", RouteSecret: "test-secret", UserAgent: "sipedge-test", Instance: name},
		adm, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	serve(t, px)
	return px
}

// bye builds a BYE from the caller; route "" sends it without Route (to
// the conference's Request-URI on sipedge, as sipp's built-in UAC does).
func bye(caller *peer, ruri, route, callID, fromTag, toTag, branch string, cseq int) string {
	r := ""
	if route != "" {
		r = "Route: " + route + "\n"
	}
	return fmt.Sprintf(`BYE %s SIP/2.0
Via: SIP/2.0/UDP %s;branch=%s
Max-Forwards: 70
%sFrom: <sip:alice@example.com>;tag=%s
To: <sip:conf1@example.com>;tag=%s
Call-ID: %s
CSeq: %d BYE
Content-Length: 0

`, ruri, caller.addr(), branch, r, fromTag, toTag, callID, cseq)
}

func countOf(events []string, prefix string) int {
	n := 0
	for _, e := range events {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

// TestProxy_ByeEndsOnlyADialogItSetUp: forged, refused and replayed BYEs
// move no count; the genuine one ends its dialog exactly once.
func TestProxy_ByeEndsOnlyADialogItSetUp(t *testing.T) {
	node := newPeer(t)
	adm := &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}}
	px := startNamedProxy(t, "A", adm)
	caller := newPeer(t)
	caller.send(px.Addr(), invite(caller, "sip:conf1@"+px.Addr(), "real-1", "z9hG4bK-r1", 70))
	inv := node.recv("INVITE ")
	node.send(px.Addr(), answer(inv, 200, "OK", "node1", node.addr()))
	ok := caller.recv("SIP/2.0 200")
	route := header(ok, "Record-Route")[0]
	waitFor(t, func() bool { return px.ActiveDialogs() == 1 }, "dialog recorded")
	ruri := "sip:conf1@" + px.Addr()

	cases := []struct {
		name      string
		msg       string
		nodeCode  int
		wantEnds  int // "end" events so far
		wantHeld  int
		wantNoted int
	}{
		{"forged: random Call-ID, no route, node answers 481",
			bye(caller, ruri, "", "forged-1", "x1", "y1", "z9hG4bK-f1", 5), 481, 0, 1, 0},
		{"forged: random Call-ID, no route, lax node answers 200",
			bye(caller, ruri, "", "forged-2", "x2", "y2", "z9hG4bK-f2", 5), 200, 0, 1, 0},
		{"forged: real route and Call-ID, wrong To tag",
			bye(caller, ruri, route, "real-1", "caller1", "nope", "z9hG4bK-f3", 5), 200, 0, 1, 0},
		{"genuine BYE refused 500: the dialog lives on",
			bye(caller, ruri, route, "real-1", "caller1", "node1", "z9hG4bK-g0", 2), 500, 0, 1, 0},
		{"genuine BYE",
			bye(caller, ruri, route, "real-1", "caller1", "node1", "z9hG4bK-g1", 3), 200, 1, 0, 0},
		{"genuine BYE replayed, node answers 481",
			bye(caller, ruri, route, "real-1", "caller1", "node1", "z9hG4bK-g2", 3), 481, 1, 0, 0},
		{"genuine BYE replayed, node answers 200",
			bye(caller, ruri, route, "real-1", "caller1", "node1", "z9hG4bK-g3", 3), 200, 1, 0, 0},
		{"genuine BYE replayed without route",
			bye(caller, ruri, "", "real-1", "caller1", "node1", "z9hG4bK-g4", 3), 200, 1, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			caller.send(px.Addr(), tc.msg)
			b := node.recv("BYE ")
			node.send(px.Addr(), answer(b, tc.nodeCode, "X", "", node.addr()))
			caller.recv(fmt.Sprintf("SIP/2.0 %d", tc.nodeCode))
			ev := adm.events()
			if got := countOf(ev, "end "); got != tc.wantEnds {
				t.Errorf("dialog ends recorded = %d, want %d (%v)", got, tc.wantEnds, ev)
			}
			if got := px.ActiveDialogs(); got != tc.wantHeld {
				t.Errorf("dialogs held = %d, want %d", got, tc.wantHeld)
			}
			if got := countOf(ev, "noted "); got != tc.wantNoted {
				t.Errorf("notes = %d, want %d", got, tc.wantNoted)
			}
		})
	}
	if h := px.Holdings(); h.Total != 0 || len(h.Confs) != 0 || len(h.Nodes) != 0 {
		t.Errorf("holdings after the end = %+v, want none", h)
	}
}

// TestProxy_ByeOfAnotherInstancesDialogIsNotedForIt: B relays the BYE of a
// dialog A set up and tells A (by dialog key); A ends it when it reads the
// note, once, and ignores forged or repeated notes.
func TestProxy_ByeOfAnotherInstancesDialogIsNotedForIt(t *testing.T) {
	node := newPeer(t)
	admA := &fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}}
	admB := &fakeAdmitter{}
	a := startNamedProxy(t, "A", admA)
	b := startNamedProxy(t, "B", admB)
	caller := newPeer(t)
	caller.send(a.Addr(), invite(caller, "sip:conf1@"+a.Addr(), "cross-1", "z9hG4bK-x1", 70))
	inv := node.recv("INVITE ")
	node.send(a.Addr(), answer(inv, 200, "OK", "node1", node.addr()))
	route := header(caller.recv("SIP/2.0 200"), "Record-Route")[0]
	waitFor(t, func() bool { return a.ActiveDialogs() == 1 }, "dialog recorded on A")
	if h := a.Holdings(); h.Total != 1 || h.Confs["conf1"].Dialogs != 1 || h.Confs["conf1"].Node != "n1" || h.Nodes["n1"] != 1 {
		t.Fatalf("A's holdings = %+v", h)
	}

	caller.send(b.Addr(), bye(caller, "sip:conf1@"+b.Addr(), route, "cross-1", "caller1", "node1", "z9hG4bK-xb", 2))
	m := node.recv("BYE ")
	node.send(b.Addr(), answer(m, 200, "OK", "", node.addr()))
	caller.recv("SIP/2.0 200")
	key := dialogKey("cross-1", "caller1", "node1")
	if ev := admB.events(); countOf(ev, "noted A "+key) != 1 || countOf(ev, "end ") != 0 {
		t.Fatalf("B's events = %q, want one note for A and no end of its own", ev)
	}
	if n := a.EndNoted([]string{key, key, dialogKey("cross-1", "caller1", "forged")}); n != 1 {
		t.Errorf("EndNoted ended %d, want 1", n)
	}
	if n := a.EndNoted([]string{key}); n != 0 {
		t.Errorf("repeated note ended %d, want 0", n)
	}
	if a.ActiveDialogs() != 0 || countOf(admA.events(), "end conf1 n1") != 1 {
		t.Errorf("A holds %d, events %q; want 0 and one end", a.ActiveDialogs(), admA.events())
	}
}

func TestDialogSet_KeyedByCallIDAndBothTags(t *testing.T) {
	var d dialogSet
	mk := func(callID, from, to, conf, node string) *dialog {
		return &dialog{callID: callID, confID: conf, node: node, callerTag: from, nodeTag: to}
	}
	d1 := mk("c", "a", "b", "conf1", "n1")
	if !d.Add(d1) || d.Add(mk("c", "a", "b", "conf1", "n1")) {
		t.Fatal("Add: first must add, the duplicate must not")
	}
	d2 := mk("c", "a", "other", "conf1", "n2") // same Call-ID, another dialog
	if !d.Add(d2) {
		t.Fatal("a dialog with the same Call-ID but another tag is another dialog")
	}
	cases := []struct {
		callID, from, to string
		want             *dialog
	}{
		{"c", "a", "b", d1},
		{"c", "b", "a", d1}, // from the node's side
		{"c", "a", "other", d2},
		{"c", "a", "", nil},
		{"c", "x", "b", nil},
		{"z", "a", "b", nil},
	}
	for _, tc := range cases {
		if got := d.Match(tc.callID, tc.from, tc.to); got != tc.want {
			t.Errorf("Match(%q,%q,%q) = %p, want %p", tc.callID, tc.from, tc.to, got, tc.want)
		}
	}
	if confDialogs(&d, "conf1") != 2 || d.NodeDialogs("n1") != 1 || d.NodeDialogs("n2") != 1 {
		t.Errorf("counts conf1=%d n1=%d n2=%d", confDialogs(&d, "conf1"), d.NodeDialogs("n1"), d.NodeDialogs("n2"))
	}
	if !d.Remove(d1) || d.Remove(d1) {
		t.Error("Remove must succeed once")
	}
	if d.RemoveKey(dialogKey("c", "a", "other")) != d2 || d.RemoveKey(dialogKey("c", "a", "other")) != nil {
		t.Error("RemoveKey must succeed once")
	}
	if d.Len() != 0 || confDialogs(&d, "conf1") != 0 || d.NodeDialogs("n1") != 0 {
		t.Errorf("after removal: len %d conf1 %d", d.Len(), confDialogs(&d, "conf1"))
	}
}

// A dialog is named by exactly its dialogKey.
func TestDialog_IsKey(t *testing.T) {
	dl := &dialog{callID: "c@h", callerTag: "a", nodeTag: "bb"}
	for key, want := range map[string]bool{
		dialogKey("c@h", "a", "bb"): true,
		dialogKey("c@h", "a", "b"):  false,
		dialogKey("c@h", "ab", "b"): false,
		dialogKey("c@", "ha", "bb"): false,
		dialogKey("c@h", "", "abb"): false,
		"c@h\x1fa\x1fbb\x1f":        false,
		"c@hxaxbb":                  false,
		"":                          false,
	} {
		if got := dl.isKey(key); got != want {
			t.Errorf("isKey(%q) = %v, want %v", key, got, want)
		}
	}
}

// BenchmarkDialogSet_Match is the per-in-dialog-request lookup by Call-ID
// and both tags, among 10 000 held dialogs.
func BenchmarkDialogSet_Match(b *testing.B) {
	var d dialogSet
	for i := range 10000 {
		id := fmt.Sprintf("call-%d", i)
		d.Add(&dialog{callID: id, callerTag: "c" + id, nodeTag: "n" + id})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if d.Match("call-4242", "ncall-4242", "ccall-4242") == nil {
			b.Fatal("not found")
		}
	}
}

func confDialogs(d *dialogSet, conf string) int {
	n, _ := d.Conf(conf)
	return n
}
