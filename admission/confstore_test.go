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
	mr.HSet(k.Conf("c1"), "node", "n1")
	if n, err := s.Node(ctx, "c1"); err != nil || n != "n1" {
		t.Fatalf("placed conference: node %q err %v, want n1", n, err)
	}
	mr.HSet(k.InstanceCalls(), "A", "3")
	if n, err := s.InstanceCalls(ctx, "A"); err != nil || n != 3 {
		t.Errorf("instance_calls[A] = %d (%v), want 3", n, err)
	}
	if n, err := s.InstanceCalls(ctx, "B"); err != nil || n != 0 {
		t.Errorf("instance_calls[B] = %d (%v), want 0", n, err)
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
