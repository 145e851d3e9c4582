package main

import (
	"context"
	"strconv"
	"time"

	"github.com/sipedge/sipedge/internal/logging"
)

// heartbeat keeps this node's entry in Redis current until ctx ends.
//
// Every tick writes the whole registration: the facts the node reports
// (addr, transport, site, server, heartbeat, load, calls) with HSET, and the
// operator's fields (weight, maintenance, capable) with HSETNX so that their
// changes persist across restarts. Writing it all each time makes a node come
// back by itself after Redis lost its data (failover to an empty replica, the
// embedded demo Redis restarting); an operator takes a running node out with
// maintenance, not by deleting it.
func (n *node) heartbeat(ctx context.Context) {
	tick := time.NewTicker(n.cfg.HeartbeatInterval)
	defer tick.Stop()
	announced := false
	outage := logging.NewOutage(n.log.With().Str("node", n.cfg.Name).Str("redis", n.cfg.Redis).Logger(),
		"redis heartbeat failed, retrying every interval", "redis heartbeat restored")
	for {
		added, err := n.writeState(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case outage.Note(err):
		default:
			if announced && added {
				n.log.Warn().Str("node", n.cfg.Name).Msg("node was missing from redis, registered again")
			}
			if !announced || added {
				n.publish(ctx)
				announced = true
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// writeState writes the registration and heartbeat in one pipeline and
// reports whether the node was newly added to the node set.
func (n *node) writeState(ctx context.Context) (added bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, max(n.cfg.HeartbeatInterval, time.Second))
	defer cancel()

	calls := n.activeCalls()
	load := min(float64(calls)/float64(n.cfg.Capacity), 1)
	key := n.k.Node(n.cfg.Name)

	// Order matters to readers: the hash is complete before the heartbeat
	// appears, and both before the name joins the node set.
	pipe := n.rdb.Pipeline()
	pipe.HSetNX(ctx, key, "weight", strconv.FormatFloat(n.cfg.Weight, 'f', -1, 64))
	pipe.HSetNX(ctx, key, "maintenance", "0")
	pipe.HSetNX(ctx, key, "capable", "1")
	addr, transport := n.registered() // tls.go
	pipe.HSet(ctx, key,
		"addr", addr,
		"transport", transport,
		"site", n.cfg.Site,
		"server", n.cfg.Server,
		"heartbeat", strconv.FormatInt(time.Now().UnixMilli(), 10),
		"load", strconv.FormatFloat(load, 'f', 3, 64),
		"calls", strconv.Itoa(calls),
	)
	sadd := pipe.SAdd(ctx, n.k.Nodes(), n.cfg.Name)
	if _, err := pipe.Exec(ctx); err != nil {
		return false, err
	}
	return sadd.Val() == 1, nil
}

// publish tells sipedge instances to reload the ring now rather than at
// their next poll.
func (n *node) publish(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := n.rdb.Publish(ctx, n.k.Events(), "node:"+n.cfg.Name).Err(); err != nil {
		n.log.Warn().Err(err).Str("node", n.cfg.Name).Msg("publish node event failed")
	}
}
