package integration

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Issue 9, item 3: presence that scales. A present participant's record in
// sipedge:participants:<conf> is not rewritten while its state holds, yet
// `sipedgectl conf show` shows its packet counters advancing (the
// instance's per-second media_stats hash); RTP stopping is a state change
// and is written (present=false).
func TestPresence_RecordWrittenOnStateChangeOnly_CountersAdvance(t *testing.T) {
	m := newMediaEnv(t, []string{"media_timeout", "60", "guests_only_timeout", "3600"}, nil, "--presence-timeout", "1s")
	u := m.join("alice", "pr-1")
	m.waitParticipants("pr-1", 1, func(p map[string]map[string]any) string {
		if p[u.callID]["present"] != true {
			return fmt.Sprintf("not present yet: %v", p)
		}
		return ""
	})
	ctx := context.Background()
	key := "sipedge:participants:pr-1"
	first, err := m.rdb.HGet(ctx, key, u.callID).Result()
	if err != nil {
		t.Fatal(err)
	}

	type showDoc struct {
		Participants []struct {
			CallID        string `json:"call_id"`
			Present       bool   `json:"present"`
			Packets       uint64 `json:"packets"`
			CountersAgeMs *int64 `json:"counters_age_ms"`
		} `json:"participants"`
	}
	// packets is conf show's packet count of u, once its per-second
	// counters are there.
	packets := func() uint64 {
		t.Helper()
		var n uint64
		eventually(t, 3*time.Second, "conf show has per-second counters", func() string {
			var doc showDoc
			m.ctlJSON(&doc, "conf", "show", "pr-1")
			if len(doc.Participants) != 1 || doc.Participants[0].CallID != u.callID {
				t.Fatalf("conf show participants %+v, want %s", doc.Participants, u.callID)
			}
			p := doc.Participants[0]
			if p.CountersAgeMs == nil || *p.CountersAgeMs > 3000 {
				return fmt.Sprintf("counters_age_ms %v", p.CountersAgeMs)
			}
			n = p.Packets
			return ""
		})
		return n
	}
	before := packets()
	sentBefore := u.sent.Load()
	for range 3 {
		time.Sleep(time.Second)
		if got, _ := m.rdb.HGet(ctx, key, u.callID).Result(); got != first {
			t.Fatalf("record rewritten while the participant stayed present:\nwas %s\nnow %s", first, got)
		}
	}
	after := packets()
	if got := m.se.metric(t, "sipedge_media_participant_writes_total", map[string]string{"op": "write"}); got != 1 {
		t.Errorf("sipedge_media_participant_writes_total{op=write} = %v while present for 3 s, want 1 (the join)", got)
	}
	if u.sent.Load() <= sentBefore+50 {
		t.Fatalf("the endpoint sent %d packets in 3 s: RTP did not flow", u.sent.Load()-sentBefore)
	}
	if after <= before+50 {
		t.Errorf("conf show packets %d after 3 s of RTP, %d before; want them advancing", after, before)
	}

	u.sending.Store(false)
	eventually(t, 5*time.Second, "present=false written", func() string {
		p := m.participants("pr-1")[u.callID]
		if p["present"] != false {
			return fmt.Sprintf("record %v", p)
		}
		return ""
	})
	if err := u.hangup(); err != nil {
		t.Fatal(err)
	}
	m.waitParticipants("pr-1", 0, nil)
	for _, k := range []string{"sipedge:participant_counts:pr-1", "sipedge:participant_shares:pr-1"} {
		if n, _ := m.rdb.Exists(ctx, k).Result(); n != 0 {
			t.Errorf("%s left behind after the last participant left", k)
		}
	}
}

// Liveness of another instance's participants comes from its heartbeat,
// not from records rewritten every second: a Host anchored by A keeps the
// conference alive for a Guest on B while A lives; once A is killed and
// its heartbeat goes stale (heartbeat_timeout 3 s), B ends the Guest by
// guests_only.
func TestPresence_DeadInstancesParticipantsIgnored(t *testing.T) {
	e := newEnv(t)
	e.writeSettings("guests_only_timeout", "2", "media_timeout", "60")
	a := e.startSipedge("A", "--media-ports", mediaPorts(t))
	b := e.startSipedge("B", "--media-ports", mediaPorts(t))
	_, _ = e.startConfnode("cn1", "--proxy", b.sipAddr())
	a.waitRing(t, 5*time.Second, "cn1")
	b.waitRing(t, 5*time.Second, "cn1")
	m := &mediaEnv{env: e, se: b}
	const conf = "pr-2"
	e.writeHash("sipedge:confcfg:"+conf, "hosts", "host@127.0.0.1")
	host := newRTPUA(t, "host")
	if err := host.dial(a.sipAddr(), conf); err != nil {
		t.Fatal(err)
	}
	guest := newRTPUA(t, "guest")
	if err := guest.dial(b.sipAddr(), conf); err != nil {
		t.Fatal(err)
	}
	m.waitParticipants(conf, 2, func(p map[string]map[string]any) string {
		if p[host.callID]["instance"] != "A" || p[host.callID]["present"] != true || p[guest.callID]["instance"] != "B" {
			return fmt.Sprintf("records %v", p)
		}
		return ""
	})
	if err := guest.noBye(3 * time.Second); err != nil { // A's present Host keeps it alive
		t.Fatal(err)
	}
	a.proc.kill()
	killed := time.Now()
	requireBye(t, guest, "guests_only", 12*time.Second)
	if el := time.Since(killed); el < 3*time.Second {
		t.Errorf("guest ended %v after A died, before A's heartbeat went stale (3 s)", el)
	}
}
