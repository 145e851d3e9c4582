package main

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// keysOf is every key in mr, sorted, to prove a command wrote nothing.
func keysOf(mr *miniredis.Miniredis) []string {
	ks := mr.Keys()
	slices.Sort(ks)
	return ks
}

// dump is the content of every hash and set in mr, to prove a command
// changed nothing.
func dump(t *testing.T, mr *miniredis.Miniredis) string {
	t.Helper()
	var b strings.Builder
	for _, key := range keysOf(mr) {
		b.WriteString(key + ":")
		switch typ := mr.Type(key); typ {
		case "hash":
			fields, _ := mr.HKeys(key)
			slices.Sort(fields)
			for _, f := range fields {
				b.WriteString(" " + f + "=" + mr.HGet(key, f))
			}
		case "set":
			members, _ := mr.Members(key)
			b.WriteString(" " + strings.Join(members, ","))
		default:
			b.WriteString(" " + typ)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func TestProfiles_CreateDeserviceRestoreDelete(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100") // server srv-cn1
	next := events(t, mr)

	out := mustCtl(t, mr, "profiles", "create", "rack7", "--name", "Rack 7", "--servers", "srv-cn1, edge-2",
		"--description", "power work")
	if !strings.Contains(out, "profile rack7 created") {
		t.Errorf("create output %q", out)
	}
	if ev := next(); ev != "profile:rack7" {
		t.Errorf("event %q, want profile:rack7", ev)
	}
	if ok, _ := mr.SIsMember(k.Profiles(), "rack7"); !ok {
		t.Fatal("rack7 not in the profiles set")
	}
	for f, want := range map[string]string{"name": "Rack 7", "servers": "srv-cn1,edge-2",
		"description": "power work", "status": "normal"} {
		if got := mr.HGet(k.Profile("rack7"), f); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}

	out = mustCtl(t, mr, "profiles", "deservice", "rack7")
	if got := mr.HGet(k.Profile("rack7"), "status"); got != "deservice" {
		t.Errorf("status %q after deservice", got)
	}
	if ev := next(); ev != "profile:rack7" {
		t.Errorf("event %q", ev)
	}
	if !strings.Contains(out, "media nodes: cn1") {
		t.Errorf("deservice does not name the affected node:\n%s", out)
	}

	lines := strings.Split(strings.TrimSpace(mustCtl(t, mr, "profiles", "list")), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("profiles list:\n%s", strings.Join(lines, "\n"))
	}
	for _, want := range []string{"rack7", "Rack 7", "deservice", "srv-cn1,edge-2", "power work"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}

	mustCtl(t, mr, "profiles", "restore", "rack7")
	if got := mr.HGet(k.Profile("rack7"), "status"); got != "normal" {
		t.Errorf("status %q after restore", got)
	}
	if ev := next(); ev != "profile:rack7" {
		t.Errorf("event %q", ev)
	}

	doc := jsonOf[map[string]any](t, mr, "profiles", "delete", "rack7")
	if doc["ok"] != true {
		t.Errorf("delete json %v", doc)
	}
	if ok, _ := mr.SIsMember(k.Profiles(), "rack7"); ok || mr.Exists(k.Profile("rack7")) {
		t.Error("rack7 still stored after delete")
	}
	if ev := next(); ev != "profile:rack7" {
		t.Errorf("event %q", ev)
	}
}

func TestProfiles_BadInputChangesNothing(t *testing.T) {
	mr := miniredis.RunT(t)
	mustCtl(t, mr, "profiles", "create", "p1", "--name", "one", "--servers", "srv1")
	before := dump(t, mr)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"duplicate id", []string{"create", "p1", "--name", "x", "--servers", "srv2"}, "already exists"},
		{"no name", []string{"create", "p2", "--servers", "srv2"}, `"name" not set`},
		{"blank name", []string{"create", "p2", "--name", " ", "--servers", "srv2"}, "bad --name"},
		{"no servers", []string{"create", "p2", "--name", "x"}, `"servers" not set`},
		{"empty servers", []string{"create", "p2", "--name", "x", "--servers", ""}, "bad --servers"},
		{"empty entry", []string{"create", "p2", "--name", "x", "--servers", "a,,b"}, "empty entries"},
		{"space in entry", []string{"create", "p2", "--name", "x", "--servers", "a b"}, "contains a space"},
		{"twice", []string{"create", "p2", "--name", "x", "--servers", "a,a"}, "listed twice"},
		{"bad id", []string{"create", "p*", "--name", "x", "--servers", "a"}, "bad profile id"},
		{"deservice unknown", []string{"deservice", "ghost"}, "unknown profile"},
		{"restore unknown", []string{"restore", "ghost"}, "unknown profile"},
		{"delete unknown", []string{"delete", "ghost"}, "unknown profile"},
		{"deservice no id", []string{"deservice"}, "missing ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ctl(t, mr, append([]string{"profiles"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want it to mention %q", err, tt.want)
			}
			if after := dump(t, mr); after != before {
				t.Errorf("Redis changed:\nbefore\n%s\nafter\n%s", before, after)
			}
		})
	}
	t.Run("hash without set member", func(t *testing.T) {
		mr.HSet(k.Profile("orphan"), "name", "o", "servers", "s", "status", "normal")
		before := dump(t, mr)
		_, _, err := ctl(t, mr, "profiles", "deservice", "orphan")
		if !errors.Is(err, errUnknownProfile) {
			t.Fatalf("err %v, want errUnknownProfile", err)
		}
		if after := dump(t, mr); after != before {
			t.Errorf("Redis changed")
		}
	})
}

func TestProfilesList_FlagsUnknownStatus(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.SAdd(k.Profiles(), "good", "odd", "empty")
	mr.HSet(k.Profile("good"), "name", "g", "servers", "s1", "status", "deservice")
	mr.HSet(k.Profile("odd"), "name", "o", "servers", "s2", "status", "offline")

	out := mustCtl(t, mr, "profiles", "list")
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "odd") && !strings.Contains(line, "invalid: offline"):
			t.Errorf("odd row %q does not flag its status", line)
		case strings.HasPrefix(line, "good") && strings.Contains(line, "invalid"):
			t.Errorf("good row %q flagged", line)
		}
	}
	if !strings.Contains(out, `unknown status "offline"`) || !strings.Contains(out, "hash does not exist") {
		t.Errorf("no warnings for odd and empty:\n%s", out)
	}

	doc := jsonOf[struct {
		Profiles []struct {
			ID        string   `json:"id"`
			Status    string   `json:"status"`
			Deservice bool     `json:"deservice"`
			Servers   []string `json:"servers"`
			Valid     bool     `json:"valid"`
		} `json:"profiles"`
	}](t, mr, "profiles", "list")
	if len(doc.Profiles) != 3 {
		t.Fatalf("%+v", doc.Profiles)
	}
	for _, p := range doc.Profiles {
		switch p.ID {
		case "good":
			if !p.Valid || !p.Deservice || !slices.Equal(p.Servers, []string{"s1"}) {
				t.Errorf("good: %+v", p)
			}
		case "odd", "empty":
			if p.Valid || p.Deservice {
				t.Errorf("%s: %+v, want invalid and not deservice", p.ID, p)
			}
		}
	}
}

func TestExceptions_AddListRemove(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.SAdd(k.Instances(), "edge-1")
	next := events(t, mr)

	_, errOut, err := ctl(t, mr, "exceptions", "add", "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := mr.SIsMember(k.Exceptions(), "edge-1"); !ok {
		t.Fatal("edge-1 not an exception")
	}
	if ev := next(); ev != "exceptions" {
		t.Errorf("event %q", ev)
	}
	if errOut != "" {
		t.Errorf("warning for a known instance: %q", errOut)
	}
	if out := mustCtl(t, mr, "exceptions", "add", "edge-1"); !strings.Contains(out, "already") {
		t.Errorf("second add: %q", out)
	}
	if _, errOut, _ := ctl(t, mr, "exceptions", "add", "edge-9"); !strings.Contains(errOut, "no instance") {
		t.Errorf("no warning for an unknown instance: %q", errOut)
	}
	next() // edge-9

	doc := jsonOf[struct {
		Exceptions []struct {
			Name  string `json:"name"`
			Known bool   `json:"known_instance"`
		} `json:"exceptions"`
	}](t, mr, "exceptions", "list")
	if len(doc.Exceptions) != 2 || doc.Exceptions[0].Name != "edge-1" || !doc.Exceptions[0].Known ||
		doc.Exceptions[1].Known {
		t.Errorf("list %+v", doc.Exceptions)
	}

	mustCtl(t, mr, "exceptions", "remove", "edge-9")
	if ok, _ := mr.SIsMember(k.Exceptions(), "edge-9"); ok {
		t.Error("edge-9 still an exception")
	}
	if ev := next(); ev != "exceptions" {
		t.Errorf("event %q", ev)
	}
	_, _, err = ctl(t, mr, "exceptions", "remove", "edge-9")
	if !errors.Is(err, errNotException) {
		t.Errorf("remove again: %v, want errNotException", err)
	}
	before := dump(t, mr)
	if _, _, err := ctl(t, mr, "exceptions", "add", "bad name"); err == nil {
		t.Error("a name with a space was accepted")
	}
	if dump(t, mr) != before {
		t.Error("a rejected add changed Redis")
	}
}

func TestNodesMaintenance_OnOffRecordsDrainAndRestore(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100")
	putNode(mr, "cn2", "127.0.0.1:5071", "100")
	mr.HSet(k.NodeCalls(), "cn1", "2")
	next := events(t, mr)

	out := mustCtl(t, mr, "nodes", "maintenance", "on", "cn1")
	if got := mr.HGet(k.Node("cn1"), "maintenance"); got != "1" {
		t.Errorf("maintenance %q, want 1", got)
	}
	started := mr.HGet(k.Node("cn1"), "drain_started")
	if _, ok := parseUnixMs(started); !ok {
		t.Errorf("drain_started %q, want unix ms", started)
	}
	if ev := next(); ev != "node:cn1" {
		t.Errorf("event %q", ev)
	}
	if !strings.Contains(out, "manual maintenance") || !strings.Contains(out, "2 calls continue") {
		t.Errorf("on output:\n%s", out)
	}

	// Again: idempotent, the drain clock is not restarted.
	mr.HSet(k.Node("cn1"), "drain_started", "1000")
	mustCtl(t, mr, "nodes", "maintenance", "on", "cn1")
	next()
	if got := mr.HGet(k.Node("cn1"), "drain_started"); got != "1000" {
		t.Errorf("second on moved drain_started to %s", got)
	}

	doc := jsonOf[map[string]any](t, mr, "nodes", "maintenance", "off", "cn1")
	if got := mr.HGet(k.Node("cn1"), "maintenance"); got != "0" {
		t.Errorf("maintenance %q, want 0", got)
	}
	if mr.HGet(k.Node("cn1"), "drain_started") != "" {
		t.Error("drain_started still set after off")
	}
	if _, ok := parseUnixMs(mr.HGet(k.Node("cn1"), "restored_at")); !ok {
		t.Errorf("restored_at %q", mr.HGet(k.Node("cn1"), "restored_at"))
	}
	if doc["in_service"] != true || doc["restored"] != true || doc["restored_at_unix_ms"] == nil {
		t.Errorf("off json %v", doc)
	}
	if ev := next(); ev != "node:cn1" {
		t.Errorf("event %q", ev)
	}
}

func TestNodesMaintenance_CapableZeroWarnsAndStaysOut(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100", "capable", "0", "drain_started", "1000")
	_, errOut, err := ctl(t, mr, "nodes", "maintenance", "off", "cn1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "forced maintenance: the manual flag has no effect") {
		t.Errorf("stderr %q", errOut)
	}
	if got := mr.HGet(k.Node("cn1"), "drain_started"); got != "1000" {
		t.Errorf("off on a capable=0 node touched drain_started: %q", got)
	}
	if mr.HGet(k.Node("cn1"), "restored_at") != "" {
		t.Error("off on a capable=0 node wrote restored_at")
	}
}

func TestNodesMaintenance_DeservicedNodeStaysOut(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100", "maintenance", "1", "drain_started", "1000")
	mr.SAdd(k.Profiles(), "p1")
	mr.HSet(k.Profile("p1"), "name", "p", "servers", "srv-cn1", "status", "deservice")
	_, errOut, err := ctl(t, mr, "nodes", "maintenance", "off", "cn1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "deserviced by profile p1") {
		t.Errorf("stderr %q", errOut)
	}
	if got := mr.HGet(k.Node("cn1"), "drain_started"); got != "1000" || mr.HGet(k.Node("cn1"), "restored_at") != "" {
		t.Error("off on a deserviced node recorded a return to service")
	}
}

func TestNodesMaintenance_BadInputChangesNothing(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100")
	mr.SAdd(k.Nodes(), "ghost")
	mr.SAdd(k.Nodes(), "bad")
	mr.HSet(k.Node("bad"), "addr", "nowhere")
	before := dump(t, mr)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown node", []string{"on", "nobody"}, "unknown node"},
		{"set member without hash", []string{"on", "ghost"}, "unknown node"},
		{"invalid hash", []string{"on", "bad"}, "fix the node hash first"},
		{"bad mode", []string{"maybe", "cn1"}, "want on or off"},
		{"missing node", []string{"on"}, "missing NODE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ctl(t, mr, append([]string{"nodes", "maintenance"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want it to mention %q", err, tt.want)
			}
			if after := dump(t, mr); after != before {
				t.Errorf("Redis changed:\nbefore\n%s\nafter\n%s", before, after)
			}
		})
	}
}

func TestInstancesList_ShowsDeserviceColumns(t *testing.T) {
	mr := miniredis.RunT(t)
	now := time.Now()
	mr.SAdd(k.Instances(), "edge-1", "edge-2")
	mr.HSet(k.Instance("edge-1"), "site", "lab", "server", "srv1", "state", "draining", "dialogs", "3",
		"deserviced", "1", "held_back", "0", "heartbeat", ms(now))
	mr.HSet(k.Instance("edge-2"), "site", "lab", "server", "srv2", "state", "normal", "dialogs", "1",
		"deserviced", "1", "held_back", "1", "heartbeat", ms(now))
	out := mustCtl(t, mr, "instances", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "DESERVICED") || !strings.Contains(lines[0], "HELD BACK") {
		t.Fatalf("instances list:\n%s", out)
	}
	if f := strings.Fields(lines[1]); !slices.Equal(f[3:7], []string{"draining", "3", "yes", "no"}) {
		t.Errorf("edge-1 row %q", lines[1])
	}
	if f := strings.Fields(lines[2]); !slices.Equal(f[3:7], []string{"normal", "1", "yes", "yes"}) {
		t.Errorf("edge-2 row %q", lines[2])
	}
	doc := jsonOf[struct {
		Instances []struct {
			Deserviced *bool `json:"deserviced"`
			HeldBack   *bool `json:"held_back"`
		} `json:"instances"`
	}](t, mr, "instances", "list")
	if d := doc.Instances[1]; d.Deserviced == nil || !*d.Deserviced || d.HeldBack == nil || !*d.HeldBack {
		t.Errorf("edge-2 json %+v", d)
	}
}

// statusFixture is a site with a node draining (maintenance, calls > 0),
// one in maintenance (no calls), one ramping up, one normal, a deserviced
// instance and a bad setting.
func statusFixture(t *testing.T) *miniredis.Miniredis {
	mr := miniredis.RunT(t)
	now := time.Now()
	putNode(mr, "cn1", "127.0.0.1:5070", "100", "maintenance", "1", "drain_started", ms(now.Add(-time.Minute)))
	putNode(mr, "cn2", "127.0.0.1:5071", "100", "maintenance", "1", "drain_started", ms(now.Add(-time.Minute)))
	putNode(mr, "cn3", "127.0.0.1:5072", "100", "restored_at", ms(now.Add(-30*time.Second)))
	putNode(mr, "cn4", "127.0.0.1:5073", "100")
	mr.HSet(k.NodeCalls(), "cn1", "3", "cn2", "0", "cn4", "1")
	mr.SAdd(k.Instances(), "edge-1", "edge-2")
	mr.HSet(k.Instance("edge-1"), "site", "lab", "server", "srv1", "state", "draining", "dialogs", "2",
		"deserviced", "1", "held_back", "0", "heartbeat", ms(now))
	mr.HSet(k.Instance("edge-2"), "site", "lab", "server", "srv2", "state", "normal", "dialogs", "5",
		"deserviced", "0", "held_back", "0", "heartbeat", ms(now))
	mr.SAdd(k.Profiles(), "p1")
	mr.HSet(k.Profile("p1"), "name", "one", "servers", "srv1", "status", "deservice")
	mr.HSet(k.Settings(), "slow_start", "abc", "drain_timeout", "600")
	mr.HSet(k.Conf("c1"), "node", "cn4")
	mr.HSet(k.Conf("c2"), "node", "cn1")
	return mr
}

func TestStatus_ShowsNodeStatesInstancesAndSettings(t *testing.T) {
	mr := statusFixture(t)
	out := mustCtl(t, mr, "status")
	row := func(prefix string) string {
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, prefix+" ") {
				return line
			}
		}
		t.Fatalf("no row %q in:\n%s", prefix, out)
		return ""
	}
	for name, want := range map[string][]string{
		"cn1":           {"draining", "manual maintenance", "100% (node 25%)", " 3 ", "0/100", "drain deadline in"},
		"cn2":           {"maintenance", "manual maintenance", "100%"},
		"cn3":           {"normal", "(ramping, 30s left)", "in ring"},
		"cn4":           {"normal", "25%", " 1 ", "100/100", "in ring"},
		"edge-1":        {"draining", " 2 ", "yes", "deserviced by p1"},
		"edge-2":        {"normal", "in service"},
		"slow_start":    {"60s", "invalid", "default used"},
		"drain_timeout": {"600s", "redis"},
		"drain_action":  {"bye", "default"},
	} {
		line := row(name)
		for _, w := range want {
			if !strings.Contains(line, w) {
				t.Errorf("%s row %q lacks %q", name, line, w)
			}
		}
	}
	if !strings.Contains(out, "CONFERENCES  2 active") {
		t.Errorf("no conference count:\n%s", out)
	}
	if !strings.Contains(out, "DESERVICE PROFILES") {
		t.Errorf("no deservice profiles section:\n%s", out)
	}
	// ramp: 30 s of 60 s elapsed, about half the weight
	if w := strings.Fields(row("cn3")); !slices.ContainsFunc(w, func(s string) bool {
		return strings.HasPrefix(s, "50/100") || strings.HasPrefix(s, "49/100") || strings.HasPrefix(s, "51/100")
	}) {
		t.Errorf("cn3 ramp weight not about 50/100: %q", row("cn3"))
	}

	doc := jsonOf[struct {
		Nodes []struct {
			Name         string  `json:"name"`
			State        string  `json:"state"`
			NodeCalls    int     `json:"node_calls"`
			ReportedLoad float64 `json:"reported_load"`
			InService    bool    `json:"in_service"`
		} `json:"nodes"`
		Instances []struct {
			Name         string   `json:"name"`
			Deserviced   *bool    `json:"deserviced"`
			DeservicedBy []string `json:"deserviced_by"`
		} `json:"instances"`
		Conferences struct {
			Active int `json:"active"`
		} `json:"conferences"`
		Settings []struct {
			Name   string `json:"name"`
			Value  string `json:"value"`
			Source string `json:"source"`
		} `json:"settings"`
	}](t, mr, "status")
	states := map[string]string{}
	for _, n := range doc.Nodes {
		states[n.Name] = n.State
	}
	if want := map[string]string{"cn1": "draining", "cn2": "maintenance", "cn3": "normal", "cn4": "normal"}; !mapsEqual(states, want) {
		t.Errorf("states %v, want %v", states, want)
	}
	if doc.Nodes[0].ReportedLoad != 1 || doc.Nodes[0].NodeCalls != 3 {
		t.Errorf("cn1 %+v", doc.Nodes[0])
	}
	if i := doc.Instances[0]; i.Deserviced == nil || !*i.Deserviced || !slices.Equal(i.DeservicedBy, []string{"p1"}) {
		t.Errorf("edge-1 %+v", i)
	}
	if doc.Conferences.Active != 2 {
		t.Errorf("conferences %+v", doc.Conferences)
	}
	for _, s := range doc.Settings {
		if s.Name == "slow_start" && (s.Value != "60s" || s.Source != "invalid") {
			t.Errorf("slow_start %+v", s)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestDrainWait_ReturnsWhenNodeCallsReachZero(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100", "maintenance", "1", "drain_started", ms(time.Now()))
	putNode(mr, "cn2", "127.0.0.1:5071", "100")
	mr.HSet(k.NodeCalls(), "cn1", "4")
	go func() {
		time.Sleep(150 * time.Millisecond)
		mr.HSet(k.NodeCalls(), "cn1", "1")
		time.Sleep(150 * time.Millisecond)
		mr.HSet(k.NodeCalls(), "cn1", "0")
	}()
	start := time.Now()
	out, _, err := ctl(t, mr, "drain", "--wait", "--interval", "20ms", "--timeout", "5s", "cn1")
	if err != nil {
		t.Fatalf("drain --wait: %v\n%s", err, out)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
	for _, want := range []string{"4 calls left", "1 call left", "node cn1 drained: state maintenance"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestDrainWait_TimeoutFails(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100", "maintenance", "1", "drain_started", ms(time.Now()))
	putNode(mr, "cn2", "127.0.0.1:5071", "100")
	mr.HSet(k.NodeCalls(), "cn1", "2")
	start := time.Now()
	out, _, err := ctl(t, mr, "drain", "--wait", "--interval", "20ms", "--timeout", "300ms", "cn1")
	if !errors.Is(err, errWaitTimeout) {
		t.Fatalf("err %v, want errWaitTimeout\n%s", err, out)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("gave up after %v", d)
	}
	if !strings.Contains(out, "still draining with 2 calls left") {
		t.Errorf("output:\n%s", out)
	}
}

func TestDrainWait_DeadlineFails(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100", "maintenance", "1", "drain_started", ms(time.Now().Add(-1500*time.Millisecond)))
	putNode(mr, "cn2", "127.0.0.1:5071", "100")
	mr.HSet(k.NodeCalls(), "cn1", "2")
	mr.HSet(k.Settings(), "drain_timeout", "2", "drain_action", "keep")
	start := time.Now()
	out, _, err := ctl(t, mr, "drain", "--wait", "--interval", "20ms", "--timeout", "10s", "cn1")
	if !errors.Is(err, errDrainDeadline) {
		t.Fatalf("err %v, want errDrainDeadline\n%s", err, out)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("deadline noticed after %v", d)
	}
	if !strings.Contains(out, "drain_action keep") {
		t.Errorf("output:\n%s", out)
	}
}

func TestDrainWait_JSONLines(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100", "maintenance", "1", "drain_started", ms(time.Now()))
	putNode(mr, "cn2", "127.0.0.1:5071", "100")
	mr.HSet(k.NodeCalls(), "cn1", "1")
	go func() {
		time.Sleep(100 * time.Millisecond)
		mr.HDel(k.NodeCalls(), "cn1")
	}()
	out := mustCtl(t, mr, "--json", "drain", "--wait", "--interval", "20ms", "cn1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], `"calls":1`) ||
		!strings.Contains(lines[len(lines)-1], `"result":"done"`) {
		t.Errorf("json lines:\n%s", out)
	}
}

func TestDrain_NotDrainingAndUnknown(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100")
	mr.SAdd(k.Instances(), "edge-1")
	mr.HSet(k.Instance("edge-1"), "site", "lab", "state", "normal", "dialogs", "0", "heartbeat", ms(time.Now()))
	for _, name := range []string{"cn1", "edge-1"} {
		if _, _, err := ctl(t, mr, "drain", "--wait", name); !errors.Is(err, errNotDraining) {
			t.Errorf("%s: %v, want errNotDraining", name, err)
		}
	}
	if _, _, err := ctl(t, mr, "drain", "nobody"); !errors.Is(err, errUnknownTarget) {
		t.Errorf("unknown: %v", err)
	}
	if _, _, err := ctl(t, mr, "drain", "--interval", "0s", "cn1"); err == nil {
		t.Error("--interval 0 accepted")
	}
}

func TestDrain_OnceShowsProgress(t *testing.T) {
	mr := miniredis.RunT(t)
	putNode(mr, "cn1", "127.0.0.1:5070", "100", "maintenance", "1", "drain_started", ms(time.Now()))
	putNode(mr, "cn2", "127.0.0.1:5071", "100")
	mr.HSet(k.NodeCalls(), "cn1", "7")
	out := mustCtl(t, mr, "drain", "cn1")
	for _, want := range []string{"node cn1: draining, 7 calls left", "manual maintenance", "deadline in"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q: %q", want, out)
		}
	}
	doc := jsonOf[map[string]any](t, mr, "drain", "cn1")
	if doc["state"] != "draining" || doc["calls"] != 7.0 || doc["deadline_unix_ms"] == nil {
		t.Errorf("json %v", doc)
	}
}

func TestDrainWait_InstanceUntilDrained(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.SAdd(k.Instances(), "edge-1")
	mr.SAdd(k.Profiles(), "p1")
	mr.HSet(k.Profile("p1"), "name", "one", "servers", "edge-1", "status", "deservice")
	// Not yet draining: the profile deservices it, the instance has not caught up.
	mr.HSet(k.Instance("edge-1"), "site", "lab", "state", "normal", "dialogs", "2", "heartbeat", ms(time.Now()))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		steps := [][]string{{"state", "draining", "dialogs", "2"}, {"dialogs", "1"}, {"state", "drained", "dialogs", "0"}}
		for _, st := range steps {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			mr.HSet(k.Instance("edge-1"), append(st, "heartbeat", ms(time.Now()))...)
		}
	}()
	out, _, err := ctl(t, mr, "drain", "--wait", "--interval", "20ms", "edge-1")
	if err != nil {
		t.Fatalf("drain --wait edge-1: %v\n%s", err, out)
	}
	for _, want := range []string{"instance edge-1: normal, 2 dialogs left (deserviced by profile p1)",
		"draining, 1 dialog left", "instance edge-1 drained: state drained"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestDrainWait_KeptActiveNodeDoesNotExpire(t *testing.T) {
	mr := miniredis.RunT(t)
	// The only node of its site: out of service but kept active.
	putNode(mr, "cn1", "127.0.0.1:5070", "100", "maintenance", "1", "drain_started", ms(time.Now().Add(-time.Hour)))
	mr.HSet(k.NodeCalls(), "cn1", "2")
	mr.HSet(k.Settings(), "drain_timeout", "60")
	out := mustCtl(t, mr, "drain", "cn1")
	if !strings.Contains(out, "suspended while kept active") || !strings.Contains(out, "last nodes of site lab") {
		t.Errorf("output:\n%s", out)
	}
	_, _, err := ctl(t, mr, "drain", "--wait", "--interval", "20ms", "--timeout", "200ms", "cn1")
	if !errors.Is(err, errWaitTimeout) {
		t.Errorf("err %v, want errWaitTimeout (the deadline is suspended)", err)
	}
}
