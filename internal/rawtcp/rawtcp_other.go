//go:build !(linux && (amd64 || arm64))

package rawtcp

import (
	"context"
	"net"
	"time"
)

// Dialer returns a go-redis Options.Dialer (netDialer); on this platform
// the connections are net's own.
func Dialer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return netDialer(timeout).DialContext
}
