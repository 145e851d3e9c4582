package app

import (
	"time"

	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/proxy"
)

// wireOptions maps the size, TCP and DNS settings; in the config 0 means
// "no limit", in proxy.WireOptions a negative value does.
func wireOptions(cfg config.Config) proxy.WireOptions {
	off := func(v int64) int64 {
		if v == 0 {
			return -1
		}
		return v
	}
	return proxy.WireOptions{
		MaxMessageSize:       cfg.MaxMessageSize,
		TCPHeaderTimeout:     durOf(off(int64(cfg.TCPHeaderTimeout))),
		TCPIdleTimeout:       durOf(off(int64(cfg.TCPIdleTimeout))),
		TCPMaxConnsPerSource: int(off(int64(cfg.TCPMaxConnsPerSource))),
		WSFrameTimeout:       durOf(off(int64(cfg.WSFrameTimeout))),
		DNSLookups:           cfg.DNSLookups == "on",
	}
}

func durOf(v int64) time.Duration { return time.Duration(v) }
