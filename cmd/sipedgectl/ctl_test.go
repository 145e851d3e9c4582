package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/ring"
)

var k = keys.New("")

// ctl runs sipedgectl against mr and returns stdout, stderr and the error.
func ctl(t *testing.T, mr *miniredis.Miniredis, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := execute(context.Background(), append([]string{"--redis", mr.Addr(), "--timeout", "2s"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

// mustCtl is ctl that fails the test on error.
func mustCtl(t *testing.T, mr *miniredis.Miniredis, args ...string) string {
	t.Helper()
	out, errOut, err := ctl(t, mr, args...)
	if err != nil {
		t.Fatalf("sipedgectl %v: %v\nstderr: %s", args, err, errOut)
	}
	return out
}

// jsonOf runs a command with --json and decodes its single document.
func jsonOf[T any](t *testing.T, mr *miniredis.Miniredis, args ...string) T {
	t.Helper()
	out := mustCtl(t, mr, append([]string{"--json"}, args...)...)
	var v T
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("--json %v: %v\n%s", args, err, out)
	}
	if dec.More() {
		t.Fatalf("--json %v printed more than one document:\n%s", args, out)
	}
	return v
}

// putNode writes a node the way a confnode would, heartbeat fresh.
func putNode(mr *miniredis.Miniredis, name, addr, weight string, extra ...string) {
	mr.SAdd(k.Nodes(), name)
	mr.HSet(k.Node(name), "addr", addr, "transport", "udp", "site", "lab", "server", "srv-"+name,
		"weight", weight, "maintenance", "0", "capable", "1", "load", "0.25", "calls", "5",
		"heartbeat", strconv.FormatInt(time.Now().UnixMilli(), 10))
	if len(extra) > 0 {
		mr.HSet(k.Node(name), extra...)
	}
}

// events subscribes to the events channel and returns a function that
// waits for the next message.
func events(t *testing.T, mr *miniredis.Miniredis) func() string {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	sub := rdb.Subscribe(context.Background(), k.Events())
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close(); rdb.Close() })
	ch := sub.Channel()
	return func() string {
		t.Helper()
		select {
		case m := <-ch:
			return m.Payload
		case <-time.After(2 * time.Second):
			t.Fatal("no event published")
			return ""
		}
	}
}

type nodesDoc struct {
	Nodes []struct {
		Name      string   `json:"name"`
		Addr      string   `json:"addr"`
		Transport string   `json:"transport"`
		Site      string   `json:"site"`
		Server    string   `json:"server"`
		Weight    *float64 `json:"weight"`
		Load      *float64 `json:"load"`
		AgeMs     *int64   `json:"heartbeat_age_ms"`
		Valid     bool     `json:"valid"`
		Error     string   `json:"error"`
		Healthy   bool     `json:"healthy"`
		Eligible  bool     `json:"eligible"`
		Reason    string   `json:"reason"`
	} `json:"nodes"`
}

func TestNodesAdd_ThenListShowsIt(t *testing.T) {
	mr := miniredis.RunT(t)
	next := events(t, mr)

	out := mustCtl(t, mr, "nodes", "add", "cn1", "127.0.0.1:5070", "--weight", "50", "--site", "lab", "--server", "srv1")
	if !strings.Contains(out, "node cn1 added") {
		t.Errorf("add output %q", out)
	}
	if ev := next(); ev != "node:cn1" {
		t.Errorf("event %q, want node:cn1", ev)
	}
	if ok, _ := mr.SIsMember(k.Nodes(), "cn1"); !ok {
		t.Fatal("cn1 not in the nodes set")
	}
	for f, want := range map[string]string{"addr": "127.0.0.1:5070", "transport": "udp", "weight": "50",
		"site": "lab", "server": "srv1", "maintenance": "0", "capable": "1"} {
		if got := mr.HGet(k.Node("cn1"), f); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}

	mr.HSet(k.Node("cn1"), "heartbeat", strconv.FormatInt(time.Now().UnixMilli(), 10), "load", "0.5")
	out = mustCtl(t, mr, "nodes", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("nodes list:\n%s", out)
	}
	for _, want := range []string{"cn1", "127.0.0.1:5070", "udp", "lab", "srv1", "50", "50%", "ago"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}

	doc := jsonOf[nodesDoc](t, mr, "nodes", "list")
	if len(doc.Nodes) != 1 {
		t.Fatalf("%d nodes, want 1", len(doc.Nodes))
	}
	n := doc.Nodes[0]
	if n.Name != "cn1" || !n.Valid || n.Weight == nil || *n.Weight != 50 || !n.Healthy || !n.Eligible || n.AgeMs == nil {
		t.Errorf("node %+v", n)
	}
}

func TestNodesAdd_RejectsBadInputAndDuplicates(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"duplicate", []string{"cn1", "127.0.0.1:5071"}, "already exists"},
		{"no port", []string{"cn2", "127.0.0.1"}, "bad address"},
		{"port out of range", []string{"cn2", "127.0.0.1:70000"}, "port must be"},
		{"bad weight", []string{"cn2", "127.0.0.1:5071", "--weight", "abc"}, "bad weight"},
		{"negative weight", []string{"cn2", "127.0.0.1:5071", "--weight", "-3"}, "must be >= 0"},
		{"bad transport", []string{"cn2", "127.0.0.1:5071", "--transport", "sctp"}, "bad --transport"},
		{"bad name", []string{"cn*", "127.0.0.1:5071"}, "bad node name"},
		{"missing addr", []string{"cn2"}, "missing ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ctl(t, mr, append([]string{"nodes", "add"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want it to mention %q", err, tt.want)
			}
			if ok, _ := mr.SIsMember(k.Nodes(), "cn2"); ok || mr.Exists(k.Node("cn2")) {
				t.Error("a rejected add wrote cn2")
			}
		})
	}
	if got := mr.HGet(k.Node("cn1"), "addr"); got != "127.0.0.1:5070" {
		t.Errorf("duplicate add changed cn1 addr to %q", got)
	}
}

func TestNodesSetWeight_BadValueErrorsAndChangesNothing(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100")
	for _, bad := range []string{"abc", "-1", "NaN", "Inf", "", "1e400"} {
		t.Run(fmt.Sprintf("%q", bad), func(t *testing.T) {
			_, _, err := ctl(t, mr, "nodes", "set-weight", "cn1", "--", bad) // "--": -1 is not a flag
			if err == nil || !strings.Contains(err.Error(), "bad weight") {
				t.Fatalf("err %v, want bad weight", err)
			}
			if got := mr.HGet(k.Node("cn1"), "weight"); got != "100" {
				t.Errorf("weight changed to %q", got)
			}
		})
	}
	t.Run("unknown node", func(t *testing.T) {
		_, _, err := ctl(t, mr, "nodes", "set-weight", "ghost", "10")
		if !errors.Is(err, errUnknownNode) {
			t.Fatalf("err %v, want errUnknownNode", err)
		}
		if mr.Exists(k.Node("ghost")) {
			t.Error("set-weight created a hash for an unknown node")
		}
	})
}

func TestNodesSetWeight_WritesAndPublishes(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100")
	next := events(t, mr)
	out := mustCtl(t, mr, "nodes", "set-weight", "cn1", "0")
	if got := mr.HGet(k.Node("cn1"), "weight"); got != "0" {
		t.Errorf("weight %q, want 0", got)
	}
	if !strings.Contains(out, "was 100") {
		t.Errorf("output %q", out)
	}
	if ev := next(); ev != "node:cn1" {
		t.Errorf("event %q", ev)
	}
	doc := jsonOf[map[string]any](t, mr, "nodes", "set-weight", "cn1", "12.5")
	if doc["ok"] != true || doc["weight"] != 12.5 {
		t.Errorf("json %v", doc)
	}
}

func TestNodesRemove(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100")
	putNode(mr, "cn2", "127.0.0.1:5071", "100")
	next := events(t, mr)

	_, errOut, err := ctl(t, mr, "nodes", "remove", "cn1")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := mr.SIsMember(k.Nodes(), "cn1"); ok || mr.Exists(k.Node("cn1")) {
		t.Error("cn1 still registered")
	}
	if ok, _ := mr.SIsMember(k.Nodes(), "cn2"); !ok {
		t.Error("cn2 removed too")
	}
	if ev := next(); ev != "node:cn1" {
		t.Errorf("event %q", ev)
	}
	if !strings.Contains(errOut, "registers itself") {
		t.Errorf("no warning about a live confnode: %q", errOut)
	}
	doc := jsonOf[nodesDoc](t, mr, "nodes", "list")
	if len(doc.Nodes) != 1 || doc.Nodes[0].Name != "cn2" {
		t.Errorf("after remove: %+v", doc.Nodes)
	}

	_, _, err = ctl(t, mr, "nodes", "remove", "cn1")
	if !errors.Is(err, errUnknownNode) {
		t.Errorf("second remove: %v, want errUnknownNode", err)
	}
}

func TestNodesList_ShowsHealthAndInvalidNodes(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "ok", "127.0.0.1:5070", "100")
	putNode(mr, "stale", "127.0.0.1:5071", "100",
		"heartbeat", strconv.FormatInt(time.Now().Add(-time.Minute).UnixMilli(), 10))
	putNode(mr, "zero", "127.0.0.1:5072", "0")
	mr.SAdd(k.Nodes(), "ghost") // in the set, no hash

	doc := jsonOf[nodesDoc](t, mr, "nodes", "list", "--heartbeat-timeout", "5s")
	got := map[string]int{}
	for i, n := range doc.Nodes {
		got[n.Name] = i
	}
	if len(doc.Nodes) != 4 {
		t.Fatalf("nodes %+v", doc.Nodes)
	}
	if n := doc.Nodes[got["ok"]]; !n.Valid || !n.Healthy || !n.Eligible {
		t.Errorf("ok: %+v", n)
	}
	if n := doc.Nodes[got["stale"]]; n.Healthy || n.Eligible || n.Reason == "" {
		t.Errorf("stale: %+v, want unhealthy with a reason", n)
	}
	if n := doc.Nodes[got["zero"]]; !n.Healthy || n.Eligible || n.Reason == "" {
		t.Errorf("zero: %+v, want healthy, out of the ring, with a reason", n)
	}
	if n := doc.Nodes[got["ghost"]]; n.Valid || !strings.Contains(n.Error, "does not exist") {
		t.Errorf("ghost: %+v, want invalid", n)
	}

	out := mustCtl(t, mr, "nodes", "list")
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "ghost") && !strings.Contains(line, "invalid") {
			t.Errorf("ghost row %q does not say invalid", line)
		}
	}
}

type lookupDoc struct {
	Key        string `json:"key"`
	Node       string `json:"node"`
	Found      bool   `json:"found"`
	Candidates []struct {
		Node   string  `json:"node"`
		Weight float64 `json:"weight"`
		Score  float64 `json:"score"`
	} `json:"candidates"`
	Excluded []struct {
		Node   string `json:"node"`
		Reason string `json:"reason"`
	} `json:"excluded"`
	Note string `json:"note"`
}

func TestRingLookup_PicksSameNodeAsRing(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "a", "127.0.0.1:5070", "100")
	putNode(mr, "b", "127.0.0.1:5071", "50")
	putNode(mr, "c", "127.0.0.1:5072", "100")
	putNode(mr, "d", "127.0.0.1:5073", "0") // healthy, out of the ring
	putNode(mr, "e", "127.0.0.1:5074", "100",
		"heartbeat", strconv.FormatInt(time.Now().Add(-time.Minute).UnixMilli(), 10))
	want := ring.New([]ring.Member{{Name: "a", Weight: 100}, {Name: "b", Weight: 50}, {Name: "c", Weight: 100}})

	for i := range 30 {
		key := fmt.Sprintf("conf-%d", i)
		doc := jsonOf[lookupDoc](t, mr, "ring", "lookup", key)
		wantNode, ok := want.Lookup(key)
		if !ok || !doc.Found || doc.Node != wantNode {
			t.Fatalf("%s: sipedgectl says %q (found %v), ring.New says %q", key, doc.Node, doc.Found, wantNode)
		}
		if len(doc.Candidates) != 3 || doc.Candidates[0].Node != wantNode {
			t.Fatalf("%s: candidates %+v, want 3 with %s first", key, doc.Candidates, wantNode)
		}
		for j := 1; j < len(doc.Candidates); j++ {
			if doc.Candidates[j].Score > doc.Candidates[j-1].Score {
				t.Fatalf("%s: candidates not best first: %+v", key, doc.Candidates)
			}
		}
		if len(doc.Excluded) != 2 || doc.Excluded[0].Node != "d" || doc.Excluded[0].Reason != ring.ReasonZeroWeight ||
			doc.Excluded[1].Node != "e" || doc.Excluded[1].Reason != ring.ReasonHeartbeatStale {
			t.Fatalf("%s: excluded %+v, want d (weight 0) and e (stale)", key, doc.Excluded)
		}
	}

	out := mustCtl(t, mr, "ring", "lookup", "conf-1")
	wantNode, _ := want.Lookup("conf-1")
	if !strings.HasPrefix(out, "conf-1 -> "+wantNode) || !strings.Contains(out, "Excluded:") ||
		!strings.Contains(out, "OPTIONS") {
		t.Errorf("human output:\n%s", out)
	}
}

func TestRingLookup_NoNodeIsAnError(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "a", "127.0.0.1:5070", "100",
		"heartbeat", strconv.FormatInt(time.Now().Add(-time.Hour).UnixMilli(), 10))
	out, _, err := ctl(t, mr, "ring", "lookup", "conf-1")
	if !errors.Is(err, errNoNode) {
		t.Fatalf("err %v, want errNoNode", err)
	}
	if !strings.Contains(out, "no node") {
		t.Errorf("output:\n%s", out)
	}
}

func TestConfList(t *testing.T) {
	mr := miniredis.RunT(t)
	started := time.Now().Add(-90 * time.Second)
	mr.HSet(k.Conf("conf-42"), "node", "cn1", "started", strconv.FormatInt(started.UnixMilli(), 10),
		"dialogs", "3", "instance", "edge-1")
	mr.SetTTL(k.Conf("conf-42"), time.Hour)
	mr.HSet(k.Conf("conf-7"), "node", "cn2")
	mr.HSet(k.ConfCfg("conf-42"), "hosts", "sip:a@x") // not a conference

	out := mustCtl(t, mr, "conf", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "CONFERENCE") {
		t.Fatalf("conf list:\n%s", out)
	}
	for _, want := range []string{"conf-42", "cn1", "3", "edge-1", "1h0m0s", "ago"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	if !strings.Contains(lines[2], "conf-7") || !strings.Contains(lines[2], "none") {
		t.Errorf("row %q", lines[2])
	}

	doc := jsonOf[struct {
		Conferences []struct {
			ID        string `json:"id"`
			Node      string `json:"node"`
			StartedMs *int64 `json:"started_unix_ms"`
			Dialogs   *int64 `json:"dialogs"`
			Instance  string `json:"instance"`
			TTLMs     *int64 `json:"ttl_ms"`
		} `json:"conferences"`
	}](t, mr, "conf", "list")
	if len(doc.Conferences) != 2 {
		t.Fatalf("%+v", doc)
	}
	c := doc.Conferences[0]
	if c.ID != "conf-42" || c.Node != "cn1" || c.StartedMs == nil || *c.StartedMs != started.UnixMilli() ||
		c.Dialogs == nil || *c.Dialogs != 3 || c.Instance != "edge-1" || c.TTLMs == nil || *c.TTLMs <= 0 {
		t.Errorf("conf-42: %+v", c)
	}
	if doc.Conferences[1].TTLMs != nil {
		t.Errorf("conf-7 has no expiry, got ttl %v", *doc.Conferences[1].TTLMs)
	}
}

func TestInstancesList(t *testing.T) {
	mr := miniredis.RunT(t)
	now := time.Now()
	mr.SAdd(k.Instances(), "edge-1", "edge-2")
	mr.HSet(k.Instance("edge-1"), "site", "lab", "server", "srv1", "state", "normal", "dialogs", "12",
		"addr", "127.0.0.1:5060", "heartbeat", strconv.FormatInt(now.UnixMilli(), 10))
	mr.HSet(k.Instance("edge-2"), "site", "lab", "server", "srv2", "state", "draining", "dialogs", "1",
		"heartbeat", strconv.FormatInt(now.Add(-time.Minute).UnixMilli(), 10))

	out := mustCtl(t, mr, "instances", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("instances list:\n%s", out)
	}
	if !strings.Contains(lines[1], "edge-1") || !strings.HasSuffix(strings.TrimSpace(lines[1]), "yes") {
		t.Errorf("edge-1 row %q, want alive", lines[1])
	}
	if !strings.Contains(lines[2], "draining") || !strings.HasSuffix(strings.TrimSpace(lines[2]), "no") {
		t.Errorf("edge-2 row %q, want not alive", lines[2])
	}

	doc := jsonOf[struct {
		Instances []struct {
			Name    string `json:"name"`
			State   string `json:"state"`
			Dialogs *int64 `json:"dialogs"`
			Alive   bool   `json:"alive"`
		} `json:"instances"`
	}](t, mr, "instances", "list", "--heartbeat-timeout", "2m")
	if len(doc.Instances) != 2 || !doc.Instances[0].Alive || !doc.Instances[1].Alive ||
		*doc.Instances[0].Dialogs != 12 {
		t.Errorf("with a 2m timeout both are alive: %+v", doc.Instances)
	}
}

func TestPrefixIsHonoured(t *testing.T) {
	mr := miniredis.RunT(t)
	mustCtl(t, mr, "--prefix", "other:", "nodes", "add", "cn1", "127.0.0.1:5070")
	if ok, _ := mr.SIsMember("other:nodes", "cn1"); !ok {
		t.Error("cn1 not under other:")
	}
	if mr.Exists(k.Nodes()) {
		t.Error("wrote under the default prefix")
	}
}

func TestRedisUnreachable_FailsWithinTimeout(t *testing.T) {
	mr := miniredis.RunT(t)
	addr := mr.Addr()
	mr.Close()
	start := time.Now()
	var out, errOut bytes.Buffer
	err := execute(context.Background(), []string{"--redis", addr, "--timeout", "300ms", "nodes", "list"}, &out, &errOut)
	if err == nil {
		t.Fatal("no error with redis down")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
}
