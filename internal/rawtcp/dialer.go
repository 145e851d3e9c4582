package rawtcp

import (
	"net"
	"time"
)

// netDialer dials as go-redis's own default dialer does: its dial timeout
// and its keep-alive settings (defaultKeepAliveConfig in go-redis v9).
func netDialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3,
	}}
}
