package app

import (
	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/proxy"
)

// listenSpecs puts the advertise of each extra listen address and the
// TLS, WS and WSS listener lists of cfg into opts.
func listenSpecs(cfg config.Config, opts *proxy.Options) {
	entries := cfg.ListenEntries()
	opts.ExtraAdvertise = nil
	for _, e := range entries[1:] {
		opts.ExtraAdvertise = append(opts.ExtraAdvertise, e.Advertise)
	}
	specs := func(entries []config.ListenEntry) []proxy.ListenSpec {
		var out []proxy.ListenSpec
		for _, e := range entries {
			out = append(out, proxy.ListenSpec{Addr: e.Addr, Advertise: e.Advertise})
		}
		return out
	}
	opts.Secure.TLSListen = specs(cfg.TLSListens())
	opts.Secure.WSListen = specs(cfg.WSListens())
	opts.Secure.WSSListen = specs(cfg.WSSListens())
}
