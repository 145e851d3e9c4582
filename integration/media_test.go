package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Issue 4, item 7: media anchoring, presence and conference auto-termination
// through the real binaries: sipedge, confnode (which sends RTP), Go
// endpoints sending RTP built with pion/rtp, a real redis-server.

// mediaEnv is one sipedge and one confnode; short timeouts through Redis.
type mediaEnv struct {
	*env
	se       *sipedge
	node     *proc
	nodeAddr string
}

func newMediaEnv(t *testing.T, settings []string, nodeArgs []string, sipedgeArgs ...string) *mediaEnv {
	t.Helper()
	e := newEnv(t)
	if len(settings) > 0 {
		e.writeSettings(settings...)
	}
	m := &mediaEnv{env: e}
	m.se = e.startSipedge("A", append([]string{"--media-ports", mediaPorts(t)}, sipedgeArgs...)...)
	m.node, m.nodeAddr = e.startConfnode("cn1", append([]string{"--proxy", m.se.sipAddr()}, nodeArgs...)...)
	m.se.waitRing(t, 5*time.Second, "cn1")
	return m
}

// mediaPorts gives each test its own relay range, so tests and instances
// never fight over ports.
func mediaPorts(t testing.TB) string {
	base := 20000 + 2*(freePort(t)%10000)
	return fmt.Sprintf("%d-%d", base, base+999)
}

// join dials a new endpoint into conf and fails the test if it is refused.
func (m *mediaEnv) join(name, conf string, extra ...string) *rtpUA {
	m.t.Helper()
	u := newRTPUA(m.t, name)
	if err := u.dial(m.se.sipAddr(), conf, extra...); err != nil {
		m.t.Fatal(err)
	}
	return u
}

// participants reads sipedge:participants:<conf>.
func (m *mediaEnv) participants(conf string) map[string]map[string]any {
	out := map[string]map[string]any{}
	raw, _ := m.rdb.HGetAll(m.t.Context(), "sipedge:participants:"+conf).Result()
	for id, v := range raw {
		var rec map[string]any
		if json.Unmarshal([]byte(v), &rec) == nil {
			out[id] = rec
		}
	}
	return out
}

// waitParticipants waits until conf has n participants in Redis.
func (m *mediaEnv) waitParticipants(conf string, n int, cond func(map[string]map[string]any) string) {
	m.t.Helper()
	eventually(m.t, 5*time.Second, fmt.Sprintf("%d participants in %s", n, conf), func() string {
		p := m.participants(conf)
		if len(p) != n {
			return fmt.Sprintf("%d: %v", len(p), p)
		}
		if cond != nil {
			return cond(p)
		}
		return ""
	})
}

// nodeEnded returns the confnode "call ended" log line of a Call-ID.
func (m *mediaEnv) nodeEnded(callID string) map[string]any {
	for _, l := range strings.Split(m.node.log(), "\n") {
		if !strings.Contains(l, `"call ended"`) || !strings.Contains(l, callID) {
			continue
		}
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil {
			return rec
		}
	}
	return nil
}

// waitNodeBye waits until the node logged the end of callID by a BYE
// whose Reason names want.
func (m *mediaEnv) waitNodeBye(callID, want string) {
	m.t.Helper()
	eventually(m.t, 5*time.Second, "node got BYE for "+callID, func() string {
		rec := m.nodeEnded(callID)
		if rec == nil {
			return "not ended at the node"
		}
		if r, _ := rec["reason"].(string); !strings.Contains(r, want) {
			return "ended with reason " + r
		}
		return ""
	})
}

func requireReason(t *testing.T, who, got, rule string) {
	t.Helper()
	want := `SIP;cause=200;text="` + rule + `"`
	if got != want {
		t.Errorf("%s: BYE Reason %q, want %q", who, got, want)
	}
}

// 7.1: a caller that stops sending RTP gets BYE after media_timeout, and so
// does its node. Silence from the node side alone never ends a call.
func TestMediaTimeout_SilentCallerEnded_SilentNodeNot(t *testing.T) {
	m := newMediaEnv(t, []string{"media_timeout", "2", "guests_only_timeout", "3600"}, []string{"--rtp=false"})
	silent := m.join("silent", "t7-1")
	talker := m.join("talker", "t7-1")
	m.waitParticipants("t7-1", 2, nil)

	time.Sleep(500 * time.Millisecond)
	silent.sending.Store(false)
	stopped := time.Now()
	reason, err := silent.waitBye(6 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(stopped); el < 2*time.Second {
		t.Errorf("silent caller ended %v after its RTP stopped, before media_timeout 2s", el)
	}
	requireReason(t, "silent caller", reason, "media timeout")
	m.waitNodeBye(silent.callID, "media timeout")

	// The talker's node sends nothing (--rtp=false): still alive.
	if err := talker.noBye(3 * time.Second); err != nil {
		t.Error(err)
	}
	if got := talker.received.Load(); got != 0 {
		t.Errorf("talker received %d RTP packets from a node that sends none", got)
	}
	m.waitParticipants("t7-1", 1, nil)
	if got := m.se.metric(t, "sipedge_media_timeouts_total", nil); got != 1 {
		t.Errorf("sipedge_media_timeouts_total = %v, want 1", got)
	}
	if err := talker.hangup(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "relay ports freed", func() string {
		if got := m.se.metric(t, "sipedge_relay_ports_in_use", nil); got != 0 {
			return fmt.Sprintf("%v ports in use", got)
		}
		return ""
	})
}
