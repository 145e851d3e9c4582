package view

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/ring"
)

var k = keys.New("")

func TestOf_ProbeDownNodeIsNotHealthyNorInRing(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	snap := ring.BuildSnapshotFrom(ring.Inputs{
		Nodes:   []ring.Node{{Name: "n1", Addr: "127.0.0.1:5071", Weight: 100, Capable: true}, {Name: "n2", Addr: "127.0.0.1:5072", Weight: 100, Capable: true}},
		ProbeUp: func(name string) bool { return name != "n2" },
		Health:  ring.HealthOptions{ProbeInterval: time.Second},
		Now:     now,
	})
	d := Of("a", snap, map[string]string{"bad": "addr: missing"}, now)
	n1, _ := d.Node("n1")
	n2, _ := d.Node("n2")
	if !n1.Healthy || !n1.Eligible || n2.Healthy || n2.Eligible || n2.Reason != ring.ReasonProbeDown {
		t.Fatalf("view %+v", d)
	}
	if d.Invalid["bad"] == "" || d.AtMs != now.UnixMilli() || d.Instance != "a" {
		t.Fatalf("view %+v", d)
	}
}

func TestPublishAndLoad(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	p := NewPublisher(rdb, k, "a", time.Second, func() Doc {
		return Doc{Instance: "a", Nodes: []Node{{Name: "n1", Healthy: false, Reason: ring.ReasonProbeDown}}}
	}, zerolog.Nop())
	if err := p.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	mr.Set(k.View("broken"), "{not json")
	views, bad, err := Load(ctx, rdb, k, []string{"a", "broken", "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := views["a"].Node("n1"); !ok || n.Healthy || n.Reason != ring.ReasonProbeDown {
		t.Fatalf("views %+v", views)
	}
	if _, ok := views["gone"]; ok || bad["broken"] == nil || len(views) != 1 {
		t.Fatalf("views %+v bad %v", views, bad)
	}
	mr.FastForward(p.TTL() + time.Millisecond)
	if views, _, _ := Load(ctx, rdb, k, []string{"a"}); len(views) != 0 {
		t.Fatal("a view outlived its TTL: a stopped instance would stay listed")
	}
}
