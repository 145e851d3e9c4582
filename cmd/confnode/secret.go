package main

import (
	"context"
	"errors"
	"time"

	"github.com/sipedge/sipedge/internal/nodeauth"
)

// secretTimeout bounds the Redis read of the node secret before a dial.
const secretTimeout = time.Second

// nodeSecret is the key confnode signs its calls through sipedge with:
// --node-secret, or the one shared in Redis, read before every dial (dials
// are rare) so a rotation applies at once. If Redis cannot be read, the
// last secret read is used.
func (n *node) nodeSecret(ctx context.Context) (string, error) {
	if n.cfg.NodeSecret != "" {
		return n.cfg.NodeSecret, nil
	}
	rctx, cancel := context.WithTimeout(ctx, secretTimeout)
	defer cancel()
	s, err := nodeauth.Shared(rctx, n.rdb, n.k.NodeSecret())
	n.mu.Lock()
	defer n.mu.Unlock()
	if err == nil {
		n.secret = s
		return s, nil
	}
	if n.secret != "" {
		n.log.Warn().Err(err).Msg("node secret unreadable in redis: signing with the last one read")
		return n.secret, nil
	}
	return "", errors.Join(errors.New("node secret unavailable"), err)
}
