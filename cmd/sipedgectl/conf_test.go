package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// confFixture is conference conf-42 on cn1 with two participants and one
// participant value that is not JSON.
func confFixture(t *testing.T) (*miniredis.Miniredis, time.Time) {
	t.Helper()
	mr := miniredis.RunT(t)
	now := time.Now()
	mr.HSet(k.Conf("conf-42"), "node", "cn1", "started", ms(now.Add(-90*time.Second)), "dialogs", "3",
		"instance", "edge-1", "no_host_since", ms(now.Add(-12*time.Second)))
	alice := `{"call_id":"c-alice","instance":"edge-1","from":"alice@example.com","role":"host","kind":"normal",` +
		`"keep_alive":"yes","media":true,"present":true,"joined_ms":` + ms(now.Add(-80*time.Second)) +
		`,"last_rtp_ms":` + ms(now.Add(-200*time.Millisecond)) + `,"packets":4000,"bytes":688000,"lost":3}`
	bob := `{"call_id":"c-bob","instance":"edge-2","from":"bob@example.com","role":"guest","kind":"adp",` +
		`"keep_alive":"if-multiple","media":false,"present":false,"joined_ms":` + ms(now.Add(-60*time.Second)) +
		`,"last_rtp_ms":0,"packets":0,"bytes":0,"lost":0}`
	mr.HSet(k.Participants("conf-42"), "c-alice", alice, "c-bob", bob, "c-broken", `{"call_id":`)
	return mr, now
}

func TestConfShow_TableListsParticipantsAndBadValues(t *testing.T) {
	mr, _ := confFixture(t)
	out := mustCtl(t, mr, "conf", "show", "conf-42")
	for _, want := range []string{"conference conf-42", "cn1", "edge-1", "no host since", "12", "1m30s ago"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	lines := strings.Split(out, "\n")
	var header int
	for i, l := range lines {
		if strings.HasPrefix(l, "CALL-ID") {
			header = i
		}
	}
	if header == 0 || len(lines) < header+4 {
		t.Fatalf("no participant table:\n%s", out)
	}
	for _, col := range []string{"FROM", "ROLE", "KIND", "KEEP-ALIVE", "PRESENT", "PACKETS", "LOST", "LAST RTP"} {
		if !strings.Contains(lines[header], col) {
			t.Errorf("header %q lacks %s", lines[header], col)
		}
	}
	alice, bob, broken := lines[header+1], lines[header+2], lines[header+3]
	for _, want := range []string{"c-alice", "alice@example.com", "host", "normal", "yes", "4000", "3", "ms ago"} {
		if !strings.Contains(alice, want) {
			t.Errorf("alice row %q lacks %q", alice, want)
		}
	}
	for _, want := range []string{"c-bob", "guest", "adp", "if-multiple", "no media", "never"} {
		if !strings.Contains(bob, want) {
			t.Errorf("bob row %q lacks %q", bob, want)
		}
	}
	if !strings.Contains(broken, "c-broken") || !strings.Contains(broken, "bad participant JSON") {
		t.Errorf("broken row %q, want the call id and an error note", broken)
	}
}

func TestConfShow_JSON(t *testing.T) {
	mr, now := confFixture(t)
	doc := jsonOf[struct {
		Conference struct {
			ID            string `json:"id"`
			Node          string `json:"node"`
			Instance      string `json:"instance"`
			Dialogs       *int64 `json:"dialogs"`
			NoHostSinceMs *int64 `json:"no_host_since_unix_ms"`
			Ended         string `json:"ended"`
		} `json:"conference"`
		Participants []struct {
			CallID       string `json:"call_id"`
			From         string `json:"from"`
			Role         string `json:"role"`
			Kind         string `json:"kind"`
			KeepAlive    string `json:"keep_alive"`
			Media        bool   `json:"media"`
			Present      bool   `json:"present"`
			Packets      int64  `json:"packets"`
			Lost         int64  `json:"lost"`
			LastRTPAgeMs *int64 `json:"last_rtp_age_ms"`
			Error        string `json:"error"`
			Raw          string `json:"raw"`
		} `json:"participants"`
	}](t, mr, "conf", "show", "conf-42")
	c := doc.Conference
	if c.ID != "conf-42" || c.Node != "cn1" || c.Instance != "edge-1" || c.Dialogs == nil || *c.Dialogs != 3 ||
		c.NoHostSinceMs == nil || *c.NoHostSinceMs != now.Add(-12*time.Second).UnixMilli() || c.Ended != "" {
		t.Errorf("conference %+v", c)
	}
	if len(doc.Participants) != 3 {
		t.Fatalf("participants %+v", doc.Participants)
	}
	a, b, bad := doc.Participants[0], doc.Participants[1], doc.Participants[2]
	if a.CallID != "c-alice" || a.Role != "host" || !a.Media || !a.Present || a.Packets != 4000 || a.Lost != 3 ||
		a.LastRTPAgeMs == nil || *a.LastRTPAgeMs < 200 || a.Error != "" {
		t.Errorf("alice %+v", a)
	}
	if b.CallID != "c-bob" || b.Kind != "adp" || b.KeepAlive != "if-multiple" || b.Media || b.LastRTPAgeMs != nil {
		t.Errorf("bob %+v", b)
	}
	if bad.CallID != "c-broken" || bad.Error == "" || bad.Raw != `{"call_id":` {
		t.Errorf("broken %+v", bad)
	}
}

// The packet counters are the anchoring instance's per-second ones when
// its media_stats hash has the call; the record's otherwise.
func TestConfShow_PacketCountersFromMediaStats(t *testing.T) {
	mr, now := confFixture(t)
	mr.HSet(k.MediaStats("edge-1"), "c-alice", `{"conf":"conf-42","packets":5123,"bytes":881156,"lost":7,"last_rtp_ms":`+
		ms(now.Add(-100*time.Millisecond))+`,"at_ms":`+ms(now.Add(-500*time.Millisecond))+`}`)
	mr.HSet(k.MediaStats("edge-2"), "c-other", `{"conf":"conf-9","packets":1}`)

	out := mustCtl(t, mr, "conf", "show", "conf-42")
	var alice string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "c-alice") {
			alice = l
		}
	}
	if !strings.Contains(alice, "5123") || !strings.Contains(alice, "7") || strings.Contains(alice, "4000") {
		t.Errorf("alice row %q, want the per-second counters 5123 packets, 7 lost", alice)
	}

	doc := jsonOf[struct {
		Participants []struct {
			CallID        string `json:"call_id"`
			Packets       int64  `json:"packets"`
			Bytes         int64  `json:"bytes"`
			Lost          int64  `json:"lost"`
			LastRTPAgeMs  *int64 `json:"last_rtp_age_ms"`
			CountersAgeMs *int64 `json:"counters_age_ms"`
		} `json:"participants"`
	}](t, mr, "conf", "show", "conf-42")
	a, b := doc.Participants[0], doc.Participants[1]
	if a.CallID != "c-alice" || a.Packets != 5123 || a.Bytes != 881156 || a.Lost != 7 ||
		a.CountersAgeMs == nil || *a.CountersAgeMs < 500 || a.LastRTPAgeMs == nil || *a.LastRTPAgeMs < 100 || *a.LastRTPAgeMs >= 200 {
		t.Errorf("alice %+v", a)
	}
	if b.CallID != "c-bob" || b.Packets != 0 || b.CountersAgeMs != nil {
		t.Errorf("bob %+v, want the record's counters and no counters age", b)
	}
}

func TestConfShow_UnknownConferenceFails(t *testing.T) {
	mr := miniredis.RunT(t)
	_, _, err := ctl(t, mr, "conf", "show", "nope")
	if !errors.Is(err, errUnknownConf) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("err %v, want errUnknownConf naming the id", err)
	}
}

func TestConfEnd_SetsEndedAndPublishes(t *testing.T) {
	mr, _ := confFixture(t)
	next := events(t, mr)
	out := mustCtl(t, mr, "conf", "end", "conf-42", "--reason", "abuse report")
	if ev := next(); ev != "conf-end conf-42" {
		t.Errorf("event %q, want conf-end conf-42", ev)
	}
	if got := mr.HGet(k.Conf("conf-42"), "ended"); got != "operator" {
		t.Errorf("ended = %q, want operator", got)
	}
	if got := mr.HGet(k.Conf("conf-42"), "end_reason"); got != "abuse report" {
		t.Errorf("end_reason = %q", got)
	}
	if mr.HGet(k.Conf("conf-42"), "node") != "cn1" {
		t.Error("other fields changed")
	}
	if !strings.Contains(out, "conf-42 ended by operator") || !strings.Contains(out, "BYE") {
		t.Errorf("output %q", out)
	}

	doc := jsonOf[map[string]any](t, mr, "conf", "end", "conf-42")
	if doc["previous"] != "operator" || doc["ok"] != true || doc["published"] != "conf-end conf-42" {
		t.Errorf("second end: %v", doc)
	}
}

func TestConfEnd_UnknownConferenceChangesNothing(t *testing.T) {
	mr := miniredis.RunT(t)
	_, _, err := ctl(t, mr, "conf", "end", "ghost")
	if !errors.Is(err, errUnknownConf) {
		t.Fatalf("err %v, want errUnknownConf", err)
	}
	if mr.Exists(k.Conf("ghost")) {
		t.Error("conf end created the conference hash")
	}
}

func TestConfDial_QueuesEntryOnTheConferenceNode(t *testing.T) {
	mr, _ := confFixture(t)
	out := mustCtl(t, mr, "conf", "dial", "conf-42", "sip:carol@10.0.0.9:5060", "--role", "guest", "--keep-alive", "no")
	entries, err := mr.List(k.Dial("cn1"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("queue %v %v", entries, err)
	}
	var e map[string]string
	if err := json.Unmarshal([]byte(entries[0]), &e); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"conf": "conf-42", "uri": "sip:carol@10.0.0.9:5060", "kind": "admin",
		"role": "guest", "keep_alive": "no"}
	for f, v := range want {
		if e[f] != v {
			t.Errorf("%s = %q, want %q", f, e[f], v)
		}
	}
	if len(e["id"]) != 16 || !strings.Contains(out, e["id"]) || !strings.Contains(out, "cn1") {
		t.Errorf("id %q, output %q", e["id"], out)
	}

	doc := jsonOf[map[string]string](t, mr, "conf", "dial", "conf-42", "sip:dave@10.0.0.9", "--kind", "adp")
	if doc["kind"] != "adp" || doc["role"] != "" || doc["keep_alive"] != "" || doc["id"] == "" || doc["id"] == e["id"] {
		t.Errorf("--json entry %v", doc)
	}
	if entries, _ := mr.List(k.Dial("cn1")); len(entries) != 2 || !strings.Contains(entries[0], "dave") {
		t.Errorf("queue %v, want the newest at the head (LPUSH)", entries)
	}
}

func TestConfDial_RejectsBadInputAndInactiveConference(t *testing.T) {
	mr, _ := confFixture(t)
	mr.HSet(k.Conf("conf-ending"), "node", "cn2", "ended", "guests_only_timeout")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"conf-42", "sip:x@h", "--role", "boss"}, "--role"},
		{[]string{"conf-42", "sip:x@h", "--keep-alive", "maybe"}, "--keep-alive"},
		{[]string{"conf-42", "sip:x@h", "--kind", "normal"}, "--kind"},
		{[]string{"conf-42", "x@h"}, "URI"},
		{[]string{"conf-42", "tel:+15551234"}, "URI"},
		{[]string{"ghost", "sip:x@h"}, "not active"},
		{[]string{"conf-ending", "sip:x@h"}, "ending"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, _, err := ctl(t, mr, append([]string{"conf", "dial"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want one mentioning %s", err, tt.want)
			}
		})
	}
	for _, node := range []string{"cn1", "cn2"} {
		if mr.Exists(k.Dial(node)) {
			t.Errorf("a rejected dial was queued for %s", node)
		}
	}
}
