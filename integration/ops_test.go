package integration

import (
	"encoding/json"
	"testing"
	"time"
)

// Issue 2, item 7.7: sipedgectl lists the nodes that are in Redis, both
// those an operator wrote by hand and a confnode that registered itself.
func TestSipedgectl_NodesListJSON(t *testing.T) {
	e := newEnv(t)
	n1, n2 := e.startNode("n1"), e.startNode("n2")
	_, cnAddr := e.startConfnode("cn1")
	eventually(t, 5*time.Second, "confnode cn1 registered in Redis", func() string {
		if addr := e.rdb.HGet(t.Context(), "sipedge:node:cn1", "addr").Val(); addr != cnAddr {
			return "sipedge:node:cn1 addr = " + addr
		}
		return ""
	})
	a := e.startSipedge("A")
	a.waitRing(t, 5*time.Second, "n1", "n2", "cn1")

	out, err := e.sipedgectl("nodes", "list", "--json")
	if err != nil {
		t.Fatalf("sipedgectl nodes list --json: %v", err)
	}
	var doc any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("sipedgectl nodes list --json is not one JSON document: %v\n%s", err, out)
	}
	listed := map[string]map[string]any{}
	collectNamed(doc, listed)
	want := map[string]string{"n1": n1.addr(), "n2": n2.addr(), "cn1": cnAddr}
	for name, addr := range want {
		obj, ok := listed[name]
		if !ok {
			t.Errorf("node %s not listed; listed: %v\n%s", name, keysOf(listed), out)
			continue
		}
		if got, ok := obj["addr"]; !ok || got != addr {
			t.Errorf("node %s listed with addr %v, want %s", name, got, addr)
		}
	}
	if len(listed) != len(want) {
		t.Errorf("listed %v, want exactly %v", keysOf(listed), keysOf(want))
	}
}

// collectNamed finds every JSON object with a string "name" field.
func collectNamed(v any, out map[string]map[string]any) {
	switch x := v.(type) {
	case map[string]any:
		if n, ok := x["name"].(string); ok {
			out[n] = x
			return
		}
		for _, c := range x {
			collectNamed(c, out)
		}
	case []any:
		for _, c := range x {
			collectNamed(c, out)
		}
	}
}

// Issue 2, item 7.7: a confnode that registered itself in Redis gets calls
// routed to it through sipedge, and answers them.
func TestConfnode_CallsRoutedThroughSipedge(t *testing.T) {
	const calls = 10
	e := newEnv(t)
	_, cnAddr := e.startConfnode("cn1")
	eventually(t, 5*time.Second, "confnode cn1 registered in Redis", func() string {
		if addr := e.rdb.HGet(t.Context(), "sipedge:node:cn1", "addr").Val(); addr != cnAddr {
			return "sipedge:node:cn1 addr = " + addr
		}
		return ""
	})
	a := e.startSipedge("A")
	a.waitRing(t, 5*time.Second, "cn1")

	res := runUAC(t, "to-confnode", uac{Scenario: "uac_call.xml", Target: a.sipAddr(),
		Rows: callRows(a.sipAddr(), ids("t7-conf", calls)...), Rate: 20, Hold: 100 * time.Millisecond})
	res.requireAllSucceeded(t, calls)

	// Every call was answered by the confnode: its Contact user is its name.
	answered := map[string]bool{}
	for _, m := range res.Msgs {
		if !m.Sent && m.Code == 200 && m.CSeq() == "1 INVITE" {
			if u := uriUser(m.Header("contact")); u != "cn1" {
				t.Errorf("Call-ID %s answered with Contact %q, want the confnode cn1", m.CallID(), m.Header("contact"))
			}
			answered[m.CallID()] = true
		}
	}
	if len(answered) != calls {
		t.Errorf("%d calls answered by a 200, want %d", len(answered), calls)
	}
	e.waitNoConferences(3 * time.Second)
}
