package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

func putInstance(mr *miniredis.Miniredis, name string, heartbeat time.Time) {
	mr.SAdd(k.Instances(), name)
	mr.HSet(k.Instance(name), "site", "lab", "server", "srv-"+name, "state", "normal", "dialogs", "0",
		"heartbeat", strconv.FormatInt(heartbeat.UnixMilli(), 10))
	mr.HSet(k.Calls(name), "t", "0")
}

// Issue 10 item 7: a stopped instance can be forgotten; a live one only
// with --force; a missing name is named.
func TestInstancesRemove(t *testing.T) {
	mr := miniredis.RunT(t)
	putInstance(mr, "dead", time.Now().Add(-time.Hour))
	putInstance(mr, "live", time.Now())
	mustCtl(t, mr, "instances", "remove", "dead")
	if ok, _ := mr.SIsMember(k.Instances(), "dead"); ok || mr.Exists(k.Instance("dead")) || mr.Exists(k.Calls("dead")) {
		t.Fatal("dead instance still listed or its hashes left")
	}
	if _, _, err := ctl(t, mr, "instances", "remove", "live"); err == nil || !strings.Contains(err.Error(), "it is alive") {
		t.Fatalf("remove live: err = %v, want refused", err)
	}
	if ok, _ := mr.SIsMember(k.Instances(), "live"); !ok {
		t.Fatal("refused removal removed the live instance")
	}
	mustCtl(t, mr, "instances", "remove", "live", "--force")
	if ok, _ := mr.SIsMember(k.Instances(), "live"); ok {
		t.Fatal("--force did not remove the live instance")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"instances", "remove"}, "missing NAME"},
		{[]string{"instances", "remove", "ghost"}, `no such instance`},
		{[]string{"instances", "remove", "a", "b"}, `unexpected argument "b"`},
	} {
		if _, _, err := ctl(t, mr, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}
