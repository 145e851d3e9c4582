//go:build !(linux && (amd64 || arm64))

package rawtcp

import (
	"context"
	"net"
	"time"
)

// Dialer returns a go-redis Options.Dialer with go-redis's own keep-alive
// settings; on this platform the connections are net's own.
func Dialer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3,
	}}
	return d.DialContext
}
