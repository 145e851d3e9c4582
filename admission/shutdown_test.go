package admission

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/ring"
)

func TestDecide_ShuttingDownTurnsAwayOnlyNewDialogs(t *testing.T) {
	n1 := ring.Node{Name: "n1", Addr: "127.0.0.1:5071"}
	nodes := fakeNodes{map[string]ring.Node{"n1": n1}, map[string]bool{"n1": true}, "n1"}
	st := State{Instance: InstanceVerdict{Reject: true, ShuttingDown: true}, Nodes: nodes, RetryAfter: 7}
	cases := []struct {
		method string
		admit  bool
	}{
		{"INVITE", false}, {"REGISTER", false}, {"SUBSCRIBE", false},
		{"BYE", true}, {"ACK", true}, {"INFO", true}, {"OPTIONS", true}, {"MESSAGE", true},
	}
	for _, tc := range cases {
		t.Run(tc.method, func(t *testing.T) {
			v := Decide(Request{Method: tc.method, ConfID: "c1", AOR: "a@b"}, st)
			if v.Admit != tc.admit {
				t.Fatalf("admit = %v, want %v (%+v)", v.Admit, tc.admit, v)
			}
			if !tc.admit && (v.Code != 503 || v.Reason != ReasonShutdown || v.RetryAfter != 7) {
				t.Errorf("rejection = %d %q retry %d, want 503 %q retry 7", v.Code, v.Reason, v.RetryAfter, ReasonShutdown)
			}
		})
	}
}

func TestAdmitter_SetShuttingDown(t *testing.T) {
	c := &Cluster{Profiles: map[string]Profile{}, Exceptions: map[string]bool{}, Instances: map[string]Instance{}}
	a := &Admitter{cluster: &fixedCluster{c}, opts: Options{Self: Self{Name: "a", Site: "s", Server: "h"}, Now: time.Now,
		HeartbeatTimeout: time.Second}, log: zerolog.Nop()}
	if v := a.Instance(); v.Reject || v.ShuttingDown || InstanceState(v, 2) != "normal" {
		t.Fatalf("before: %+v", v)
	}
	a.SetShuttingDown(true)
	v := a.Instance() // the cached verdict must not hide the change
	if !v.Reject || !v.ShuttingDown || v.HeldBack {
		t.Fatalf("shutting down: %+v, want Reject and ShuttingDown", v)
	}
	if InstanceState(v, 2) != "draining" || InstanceState(v, 0) != "drained" {
		t.Errorf("states %q/%q, want draining/drained", InstanceState(v, 2), InstanceState(v, 0))
	}
	a.SetShuttingDown(false)
	if v := a.Instance(); v.Reject || v.ShuttingDown {
		t.Errorf("after clearing: %+v", v)
	}
}

// A peer that is shutting down (it publishes draining with no deservice
// profile) is no standby: a deserviced instance keeps admitting rather than
// leave its site with nobody taking calls.
func TestJudgeInstance_ShuttingDownPeerIsNoStandby(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		peerState string
		reject    bool
	}{{"normal", true}, {"", true}, {"draining", false}, {"drained", false}} {
		t.Run("peer "+tc.peerState, func(t *testing.T) {
			c := &Cluster{
				Profiles:   map[string]Profile{"p": {Servers: []string{"a"}, Deservice: true}},
				Exceptions: map[string]bool{},
				Instances: map[string]Instance{
					"a": {Name: "a", Site: "s", Server: "ha", Heartbeat: now, State: "draining"},
					"b": {Name: "b", Site: "s", Server: "hb", Heartbeat: now, State: tc.peerState},
				},
			}
			v := JudgeInstance(Self{Name: "a", Site: "s", Server: "ha"}, c, now, 5*time.Second)
			if v.Reject != tc.reject || v.HeldBack == tc.reject {
				t.Errorf("peer state %q: %+v, want reject %v", tc.peerState, v, tc.reject)
			}
		})
	}
}

// SIGHUP: new YAML defaults apply at the next reload; sipedge:settings
// values still override them.
func TestStateWatcher_SetDefaults(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	k := keys.New("")
	src, err := contract.NewWatcher(rdb, k, contract.Options{Every: time.Second}, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	w := NewStateWatcher(src)
	ctx := context.Background()
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	d := DefaultSettings()
	d.RetryAfter, d.DrainBye = 7, false
	w.SetDefaults(d)
	if err := src.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if s := w.Cluster().Settings; s.RetryAfter != 7 || s.DrainBye {
		t.Fatalf("after SetDefaults: %+v, want retry_after 7, drain_action keep", s)
	}
	mr.HSet(k.Settings(), "retry_after", "12")
	if err := src.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if s := w.Cluster().Settings; s.RetryAfter != 12 || s.DrainBye {
		t.Errorf("with retry_after in Redis: %+v, want 12 and the new default drain_action keep", s)
	}
}
