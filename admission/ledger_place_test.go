package admission

import (
	"context"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/keys"
)

// The count write gives a conference its placement fields (node, started,
// instance) only where they are missing, as HSETNX would, and announces
// a placement only when it creates the node field.
func TestLedger_WriteSetsPlacementFieldsOnlyWhereMissing(t *testing.T) {
	cases := []struct {
		name      string
		node      string            // the node the writer's dialog is on ("" = not known here)
		before    map[string]string // the conference key before the write (nil = absent)
		want      map[string]string // after, "started" compared separately
		kept      string            // the "started" kept ("" = set by this write)
		announced bool              // "+c1" published on the placements channel
	}{
		{name: "new conference", node: "n1",
			want: map[string]string{"node": "n1", "instance": "A", "dialogs": "1"}, announced: true},
		{name: "placed by another instance", node: "n1",
			before: map[string]string{"node": "n2", "started": "111", "instance": "B", "dialogs": "3"},
			want:   map[string]string{"node": "n2", "instance": "B", "dialogs": "1"}, kept: "111"},
		{name: "node only, as a hand-made key", node: "n1",
			before: map[string]string{"node": "n2"},
			want:   map[string]string{"node": "n2", "instance": "A", "dialogs": "1"}},
		{name: "no node known here", node: "",
			want: map[string]string{"dialogs": "1"}, kept: "-"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newLedgerEnv(t)
			ctx := context.Background()
			key := e.k.Conf("c1")
			for f, v := range tc.before {
				e.mr.HSet(key, f, v)
			}
			sub := e.rdb.Subscribe(ctx, e.k.Placements())
			defer sub.Close()
			if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
				t.Fatal(err)
			}
			h := newHolder()
			h.add("d1", "c1", tc.node)
			l := e.ledger("A", h)
			before := time.Now().UnixMilli()
			l.Touch("c1", tc.node)
			l.flush(ctx)

			got := e.hash(key)
			started := got["started"]
			delete(got, "started")
			if !maps.Equal(got, tc.want) {
				t.Errorf("conference key = %v (started aside), want %v", got, tc.want)
			}
			switch tc.kept {
			case "":
				ms, err := strconv.ParseInt(started, 10, 64)
				if err != nil || ms < before || ms > time.Now().UnixMilli() {
					t.Errorf("started = %q, want this write's time (%d or after)", started, before)
				}
			case "-": // no placement here: no start time either
				if started != "" {
					t.Errorf("started = %q, want none", started)
				}
			default:
				if started != tc.kept {
					t.Errorf("started = %q, want %q kept", started, tc.kept)
				}
			}
			var announced, want string
			if msg, err := sub.ReceiveTimeout(ctx, 200*time.Millisecond); err == nil {
				if m, ok := msg.(*redis.Message); ok {
					announced = m.Payload
				}
			}
			if tc.announced {
				want = keys.PlacedMessage("c1")
			}
			if announced != want {
				t.Errorf("placements channel got %q, want %q", announced, want)
			}
		})
	}
}
