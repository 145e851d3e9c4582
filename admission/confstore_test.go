package admission

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/keys"
)

func TestConfStore_PlacementLifecycle(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	k := keys.New("")
	s := NewConfStore(rdb, k, time.Hour)
	ctx := context.Background()

	if n, err := s.Node(ctx, "c1"); err != nil || n != "" {
		t.Fatalf("unknown conference: node %q err %v", n, err)
	}
	if placed, err := s.DialogStarted(ctx, "c1", "n1", "A", time.UnixMilli(1000)); err != nil || placed != "n1" {
		t.Fatalf("first dialog: placed %q err %v", placed, err)
	}
	// A racing instance that picked another node keeps the first placement.
	if placed, err := s.DialogStarted(ctx, "c1", "n2", "B", time.UnixMilli(2000)); err != nil || placed != "n1" {
		t.Fatalf("second dialog: placed %q err %v, want n1", placed, err)
	}
	if got := mr.HGet(k.Conf("c1"), "dialogs"); got != "2" {
		t.Errorf("dialogs = %q, want 2", got)
	}
	if got := mr.HGet(k.NodeCalls(), "n1"); got != "1" {
		t.Errorf("node_calls[n1] = %q, want 1", got)
	}
	if got := mr.HGet(k.NodeCalls(), "n2"); got != "1" {
		t.Errorf("node_calls[n2] = %q, want 1 (the racing dialog really went to n2)", got)
	}
	if n, err := s.InstanceCalls(ctx, "A"); err != nil || n != 1 {
		t.Errorf("instance_calls[A] = %d (%v), want 1", n, err)
	}
	if got := mr.HGet(k.Conf("c1"), "started"); got != "1000" {
		t.Errorf("started = %q, want first start 1000", got)
	}
	if ttl := mr.TTL(k.Conf("c1")); ttl <= 0 || ttl > time.Hour {
		t.Errorf("ttl = %s, want (0, 1h]", ttl)
	}
	if left, err := s.DialogEnded(ctx, "c1", "n1", "A"); err != nil || left != 1 {
		t.Fatalf("first end: left %d err %v", left, err)
	}
	if !mr.Exists(k.Conf("c1")) {
		t.Fatal("placement removed while a dialog remains")
	}
	if left, err := s.DialogEnded(ctx, "c1", "n2", "B"); err != nil || left != 0 {
		t.Fatalf("last end: left %d err %v", left, err)
	}
	if mr.Exists(k.Conf("c1")) {
		t.Fatal("placement kept after the last dialog ended")
	}
	if mr.Exists(k.InstanceCalls()) {
		t.Errorf("instance_calls kept after every dialog ended")
	}
	if mr.Exists(k.NodeCalls()) {
		keys, _ := mr.HKeys(k.NodeCalls())
		t.Errorf("node_calls kept after every dialog ended: %v", keys)
	}
	if left, err := s.DialogEnded(ctx, "c1", "n1", "A"); err != nil || left != -1 {
		t.Fatalf("end of unknown conference: left %d err %v, want -1", left, err)
	}
}

func TestConfStore_RedisDownIsAnError(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	mr.Close()
	s := NewConfStore(rdb, keys.New(""), time.Hour)
	if _, err := s.Node(context.Background(), "c1"); err == nil {
		t.Fatal("lookup with Redis down returned no error")
	}
}
