// Package view publishes what one sipedge instance sees of the media
// nodes (probe health, suspects, ring membership, invalid node hashes) to
// Redis, so sipedgectl and the live page show what the instances act on:
// probe state lives in each instance and is nowhere else in Redis.
//
// Each instance writes <prefix>view:<instance>, a JSON document with a
// short expiry, every interval; a stopped instance's view disappears.
package view

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/internal/logging"
	"github.com/sipedge/sipedge/ring"
)

// Node is one valid node as an instance judges it.
type Node struct {
	Name     string  `json:"name"`
	Healthy  bool    `json:"healthy"`
	Eligible bool    `json:"eligible"` // in this instance's ring
	Reason   string  `json:"reason,omitempty"`
	State    string  `json:"state"`
	Weight   float64 `json:"effective_weight"`
}

// Doc is one instance's view.
type Doc struct {
	Instance    string            `json:"instance"`
	AtMs        int64             `json:"at_ms"`
	RingVersion uint64            `json:"ring_version"`
	Nodes       []Node            `json:"nodes"`
	Invalid     map[string]string `json:"invalid,omitempty"` // node -> why its hash is unusable

	// Over the last minute: new dialogs refused (admission and flood
	// limits) and errors (malformed SIP, messages not sent, Redis errors).
	RejectsPerMin float64 `json:"rejects_per_min"`
	ErrorsPerMin  float64 `json:"errors_per_min"`
}

// Of builds the view of a ring snapshot.
func Of(instance string, s *ring.Snapshot, invalid map[string]string, now time.Time) Doc {
	d := Doc{Instance: instance, AtMs: now.UnixMilli(), RingVersion: s.Version(), Nodes: []Node{}, Invalid: invalid}
	for _, st := range s.Statuses() {
		d.Nodes = append(d.Nodes, Node{Name: st.Node.Name, Healthy: st.Healthy, Eligible: st.Eligible,
			Reason: st.Reason, State: st.State, Weight: st.EffectiveWeight})
	}
	return d
}

// Node returns the named node of the view.
func (d Doc) Node(name string) (Node, bool) {
	for _, n := range d.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// Publisher writes one instance's view every interval.
type Publisher struct {
	rdb      redis.UniversalClient
	key      string
	interval time.Duration
	build    func() Doc
	log      zerolog.Logger
}

// NewPublisher writes build() under keys.View(instance).
func NewPublisher(rdb redis.UniversalClient, k keys.Keys, instance string, interval time.Duration, build func() Doc, log zerolog.Logger) *Publisher {
	return &Publisher{rdb: rdb, key: k.View(instance), interval: interval, build: build, log: log}
}

// TTL is how long a view outlives its instance's last write.
func (p *Publisher) TTL() time.Duration { return 3 * p.interval }

// Publish writes the view once.
func (p *Publisher) Publish(ctx context.Context) error {
	b, err := json.Marshal(p.build())
	if err != nil {
		return fmt.Errorf("encode view: %w", err)
	}
	if err := p.rdb.Set(ctx, p.key, b, p.TTL()).Err(); err != nil {
		return fmt.Errorf("write view %s: %w", p.key, err)
	}
	return nil
}

// Run publishes every interval until ctx ends; failures are logged once
// per outage (the heartbeat reports Redis faults too).
func (p *Publisher) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	outage := logging.NewOutage(p.log, "node view not published", "node view published again")
	for {
		wctx, cancel := context.WithTimeout(ctx, p.interval)
		err := p.Publish(wctx)
		cancel()
		if ctx.Err() == nil {
			outage.Note(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Load reads the views of the named instances; an instance without one
// (stopped, or older than this feature) is absent from the map. A value
// that is not a view is skipped and reported in bad.
func Load(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, instances []string) (views map[string]Doc, bad map[string]error, err error) {
	views, bad = map[string]Doc{}, map[string]error{}
	if len(instances) == 0 {
		return views, bad, nil
	}
	ks := make([]string, len(instances))
	for i, name := range instances {
		ks[i] = k.View(name)
	}
	vals, err := rdb.MGet(ctx, ks...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("read node views: %w", err)
	}
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var d Doc
		if err := json.Unmarshal([]byte(s), &d); err != nil {
			bad[instances[i]] = fmt.Errorf("view of %s: %w", instances[i], err)
			continue
		}
		views[instances[i]] = d
	}
	return views, bad, nil
}
