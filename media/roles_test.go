package media

import (
	"context"
	"testing"
)

// Issue 9 item 2: a call set-up makes at most one synchronous Redis round
// trip (admission's). Joined makes none: the role a join gets from its
// conference's hosts list is read by the write queue's flush, one pipeline
// for every join it carries, one read per conference.
func TestJoined_RolesFromHostsReadByTheFlushInOneRoundTrip(t *testing.T) {
	e := newEnv(t)
	in := e.instance("A")
	e.newConf("conf-1", "alice@example.com")
	e.newConf("conf-2", "bob@example.com")
	hget := &tripCounter{name: "hget"}
	e.rdb.AddHook(hget)
	before := e.mr.CommandCount()

	joins := []struct{ call, conf, aor, role, want string }{
		{"call-1", "conf-1", "alice@example.com", "", "host"},
		{"call-2", "conf-1", "carol@example.com", "", "guest"},
		{"call-3", "conf-2", "carol@example.com", "", "guest"},
		{"call-4", "conf-2", "dave@example.com", "host", "host"}, // trusted header: no read
	}
	for _, j := range joins {
		in.mg.Joined(context.Background(), Join{CallID: j.call, ConfID: j.conf, AOR: j.aor, Role: j.role})
	}
	if cmds := e.mr.CommandCount() - before; cmds != 0 {
		t.Fatalf("Joined sent %d commands to Redis, want none", cmds)
	}
	in.flush()
	// The flush's only HGETs are the hosts lists (participants are
	// written by script): one round trip, one read per conference.
	if trips, cmds := hget.get(); trips != 1 || cmds != 2 {
		t.Errorf("hosts lists read in %d round trips with %d HGETs, want 1 and 2", trips, cmds)
	}
	for _, j := range joins {
		r, ok := e.record(t, j.conf, j.call)
		if !ok || r.Role != j.want {
			t.Errorf("%s (%s in %s): record %+v (found %v), want role %s", j.call, j.aor, j.conf, r, ok, j.want)
		}
	}
	if n := in.logs.count(logLine{msg: "participant joined"}); n != len(joins) {
		t.Errorf("participant joined logged %d times, want %d (once each)\n%s", n, len(joins), in.logs)
	}
}

// A hosts list that cannot be read makes the join a Host: a Redis fault
// must not end conferences by the guests-only rule.
func TestJoined_HostsUnreadableJoinsAsHost(t *testing.T) {
	e := newEnv(t)
	in := e.instance("A")
	e.newConf("conf-1", "alice@example.com")
	in.mg.Joined(context.Background(), Join{CallID: "call-1", ConfID: "conf-1", AOR: "carol@example.com"})
	e.mr.SetError("LOADING Redis is loading the dataset in memory")
	in.flush()
	e.mr.SetError("")
	for _, c := range in.mg.Conferences() {
		for _, p := range c.Participants {
			if p.CallID == "call-1" && p.Role != "host" {
				t.Errorf("role with the hosts list unreadable = %q, want host", p.Role)
			}
		}
	}
	in.flush() // the failed write was requeued
	if r, ok := e.record(t, "conf-1", "call-1"); !ok || r.Role != "host" {
		t.Errorf("record after Redis is back: %+v (found %v), want role host", r, ok)
	}
}
