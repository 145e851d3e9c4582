package integration

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Issue 10 item 2: a node hash sipedge cannot use is named in /api/status
// (as in the CLI and on the live page), not silently left out.
func TestStatus_InvalidNodeHashNamed(t *testing.T) {
	e := newEnv(t)
	s := e.startSipedge("A")
	ctx := context.Background()
	e.rdb.SAdd(ctx, "sipedge:nodes", "bad")
	e.rdb.HSet(ctx, "sipedge:node:bad", "addr", "127.0.0.1:5071", "weight", "heavy")
	eventually(t, 5*time.Second, "invalid node in /api/status", func() string {
		_, body, err := s.get("/api/status")
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(body, `"invalid_nodes"`) || !strings.Contains(body, `\"heavy\" is not a number`) {
			return body
		}
		return ""
	})
}
