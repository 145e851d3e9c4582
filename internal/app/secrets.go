package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/internal/nodeauth"
	"github.com/sipedge/sipedge/proxy"
)

// secretPoll is how often secrets kept in Redis are read again: a rotation
// (`sipedgectl route-secret rotate`) reaches every instance within it.
const secretPoll = time.Second

// trustSecrets are the keys besides the current route secret: route
// secrets still accepted (a rotation), and the node secrets X-Sipedge-Auth
// is checked with.
type trustSecrets struct {
	oldRoutes []string // route_secret_prev, or <prefix>route_secret_next and _prev from Redis
	nodes     []string // current node secret first
	window    time.Duration
}

// loadTrustSecrets reads them from the configuration or, where it sets
// none, from Redis (creating the node secret on first start).
func loadTrustSecrets(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, cfg config.Config) (trustSecrets, error) {
	ts := trustSecrets{window: cfg.NodeAuthWindow}
	if cfg.RouteKey != "" {
		ts.oldRoutes = nonEmpty(cfg.RouteKeyPrev)
	} else {
		vals, err := rdb.MGet(ctx, k.RouteSecretNext(), k.RouteSecretPrev()).Result()
		if err != nil {
			return ts, fmt.Errorf("read previous route secrets: %w", err)
		}
		ts.oldRoutes = nonEmpty(strs(vals)...)
	}
	if cfg.NodeSecret != "" {
		ts.nodes = nonEmpty(cfg.NodeSecret, cfg.NodeSecretPrev)
		return ts, nil
	}
	s, err := nodeauth.Shared(ctx, rdb, k.NodeSecret())
	if err != nil {
		return ts, err
	}
	ts.nodes = []string{s}
	return ts, nil
}

// apply puts them into the proxy options.
func (ts trustSecrets) apply(o *proxy.Options) {
	o.OldRouteSecrets, o.NodeSecrets, o.NodeAuthWindow = ts.oldRoutes, ts.nodes, ts.window
}

// secretSink is what watchSecrets changes (the proxy).
type secretSink interface {
	SetRouteSecrets(current string, old ...string) error
	SetNodeSecrets(secrets ...string)
}

var _ secretSink = (*proxy.Proxy)(nil)

// watchSecrets follows the secrets kept in Redis until ctx ends: a new
// current route secret encodes new routes while the one it replaces, the
// previous and the next one still decode; a new node secret is checked
// beside the one it replaces. A node secret gone from Redis (Redis lost its
// data) is written back, so confnode signs with the key sipedge checks.
// Configured secrets never change at run time.
func watchSecrets(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, cfg config.Config,
	routeCur string, ts trustSecrets, sink secretSink, log zerolog.Logger) {
	w := secretWatch{route: routeCur, routeOld: ts.oldRoutes, nodes: ts.nodes}
	t := time.NewTicker(secretPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, cfg.RedisTimeout)
		if cfg.RouteKey == "" {
			vals, err := rdb.MGet(rctx, k.RouteSecret(), k.RouteSecretNext(), k.RouteSecretPrev()).Result()
			if err == nil {
				v := strs(vals)
				if v[0] == "" {
					writeBackRoute(rctx, rdb, k, &w, log)
				}
				if cur, old, changed := w.nextRoute(v[0], v[1], v[2]); changed {
					if err := sink.SetRouteSecrets(cur, old...); err != nil {
						log.Error().Err(err).Msg("route secrets not applied")
					} else {
						log.Info().Str("current", fingerprint(cur)).Strs("accepted", fingerprints(old)).
							Msg("route secrets changed")
					}
				}
			}
		}
		if cfg.NodeSecret == "" {
			cur, err := rdb.Get(rctx, k.NodeSecret()).Result()
			switch {
			case errors.Is(err, redis.Nil) && len(w.nodes) > 0:
				if err := rdb.SetNX(rctx, k.NodeSecret(), w.nodes[0], 0).Err(); err == nil {
					log.Warn().Str("key", k.NodeSecret()).Str("secret", fingerprint(w.nodes[0])).
						Msg("node secret missing in redis: written back")
				}
			case err == nil:
				if nodes, changed := w.nextNode(cur); changed {
					sink.SetNodeSecrets(nodes...)
					log.Info().Strs("accepted", fingerprints(nodes)).Msg("node secrets changed")
				}
			}
		}
		cancel()
	}
}

// secretWatch is the state of watchSecrets: what the proxy holds.
type secretWatch struct {
	route    string   // current route secret
	replaced string   // the route secret the last change of route replaced
	routeOld []string // route secrets accepted besides route
	nodes    []string // node secrets, current first
}

// nextRoute computes the route secrets from what Redis holds: current,
// next and previous. An empty current (Redis lost its data) changes
// nothing: watchSecrets writes the held ones back. The one a change
// replaced stays accepted until the next change, even if Redis no longer
// names it.
func (w *secretWatch) nextRoute(cur, next, prev string) (string, []string, bool) {
	if cur == "" {
		return w.route, w.routeOld, false
	}
	if cur != w.route {
		w.replaced = w.route
	}
	old := slices.DeleteFunc(dedupe(nonEmpty(next, prev, w.replaced)), func(s string) bool { return s == cur })
	changed := cur != w.route || !slices.Equal(old, w.routeOld)
	w.route, w.routeOld = cur, old
	return cur, old, changed
}

// writeBack is what to restore when Redis lost the route secrets: the
// current one and the one accepted as previous.
func (w *secretWatch) writeBack() (cur, prev string) {
	prev = w.replaced
	if prev == "" && len(w.routeOld) > 0 {
		prev = w.routeOld[len(w.routeOld)-1]
	}
	return w.route, prev
}

// nextNode computes the node secrets: the current one from Redis first,
// then the one it replaced.
func (w *secretWatch) nextNode(cur string) ([]string, bool) {
	if cur == "" || (len(w.nodes) > 0 && w.nodes[0] == cur) {
		return w.nodes, false
	}
	nodes := []string{cur}
	if len(w.nodes) > 0 {
		nodes = append(nodes, w.nodes[0])
	}
	w.nodes = nodes
	return nodes, true
}

// fingerprint names a secret in logs without revealing it.
func fingerprint(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

func fingerprints(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fingerprint(s)
	}
	return out
}

func strs(vals []any) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i], _ = v.(string)
	}
	return out
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func dedupe(ss []string) []string {
	var out []string
	for _, s := range ss {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// writeBackRoute restores the route secrets in a Redis that lost them
// (SET NX: an instance that wrote first wins, and all follow it).
func writeBackRoute(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, w *secretWatch, log zerolog.Logger) {
	cur, prev := w.writeBack()
	if err := rdb.SetNX(ctx, k.RouteSecret(), cur, 0).Err(); err != nil {
		return
	}
	if prev != "" {
		_ = rdb.SetNX(ctx, k.RouteSecretPrev(), prev, 0).Err()
	}
	log.Warn().Str("key", k.RouteSecret()).Str("current", fingerprint(cur)).Str("prev", fingerprint(prev)).
		Msg("route secret missing in redis: written back")
}
