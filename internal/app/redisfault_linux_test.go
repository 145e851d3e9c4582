//go:build linux && (amd64 || arm64)

package app

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/sipedge/sipedge/internal/rawtcp"
)

// sipedge's Redis connections are rawtcp's, whose reads and writes stay
// out of the runtime's syscall state (internal/rawtcp's doc).
func TestRedisOptions_DialsRawConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	o := redisOptions(ln.Addr().String(), 250*time.Millisecond)
	if o.Dialer == nil {
		t.Fatal("no Dialer: go-redis would dial net's own connections")
	}
	c, err := o.Dialer(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*rawtcp.Conn); !ok {
		t.Fatalf("Dialer gave a %T, want a *rawtcp.Conn", c)
	}
}
