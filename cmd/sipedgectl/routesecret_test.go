package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Issue 8 item 8: rotate stages the new secret, then promotes it and keeps
// the old one as previous; drop-prev removes it.
func TestRouteSecretRotate(t *testing.T) {
	mr := miniredis.RunT(t)
	if _, _, err := ctl(t, mr, "route-secret", "rotate", "--settle", "0s"); !errors.Is(err, errNoRouteSecret) {
		t.Fatalf("rotate without a secret: %v, want errNoRouteSecret", err)
	}
	_ = mr.Set("sipedge:route_secret", "A")
	out := mustCtl(t, mr, "route-secret", "rotate", "--settle", "0s")
	cur, _ := mr.Get("sipedge:route_secret")
	prev, _ := mr.Get("sipedge:route_secret_prev")
	if cur == "A" || len(cur) != 48 || prev != "A" || mr.Exists("sipedge:route_secret_next") {
		t.Fatalf("after rotate: current %q prev %q next exists %v", cur, prev, mr.Exists("sipedge:route_secret_next"))
	}
	if strings.Contains(out, cur) || strings.Contains(out, "A ") {
		t.Errorf("rotate printed a secret: %q", out)
	}
	if !strings.Contains(out, fingerprint(cur)) {
		t.Errorf("rotate output %q lacks the new fingerprint %s", out, fingerprint(cur))
	}
	show := jsonOf[routeSecretRow](t, mr, "--json", "route-secret", "show")
	if show != (routeSecretRow{Current: fingerprint(cur), Prev: fingerprint("A")}) {
		t.Errorf("show = %+v", show)
	}
	mustCtl(t, mr, "route-secret", "drop-prev")
	if mr.Exists("sipedge:route_secret_prev") {
		t.Fatal("drop-prev left the previous secret")
	}
}

func TestRouteSecretPromote_RefusesWhenRotatedMeanwhile(t *testing.T) {
	mr := miniredis.RunT(t)
	_ = mr.Set("sipedge:route_secret", "A")
	_ = mr.Set("sipedge:route_secret", "X") // another rotation won
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	n, err := promoteScript.Run(t.Context(), rdb, []string{"sipedge:route_secret", "sipedge:route_secret_next",
		"sipedge:route_secret_prev"}, "A", "B").Int()
	if err != nil || n != 0 {
		t.Fatalf("promote over a changed secret: %d, %v; want 0", n, err)
	}
	if cur, _ := mr.Get("sipedge:route_secret"); cur != "X" {
		t.Fatalf("current %q, want X untouched", cur)
	}
}
