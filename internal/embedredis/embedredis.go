// Package embedredis runs an in-process Redis-compatible server (miniredis)
// on loopback, so the demo runs on a bare machine. Real deployments point
// sipedge at a real Redis.
package embedredis

import (
	"fmt"

	"github.com/alicebob/miniredis/v2"
)

// Server is a running embedded Redis.
type Server struct{ m *miniredis.Miniredis }

// Start listens on addr (a loopback HOST:PORT; port 0 picks a free one).
func Start(addr string) (*Server, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("start embedded redis on %s: %w", addr, err)
	}
	return &Server{m: m}, nil
}

// Addr is the HOST:PORT clients connect to.
func (s *Server) Addr() string { return s.m.Addr() }

// Close stops the server.
func (s *Server) Close() { s.m.Close() }
