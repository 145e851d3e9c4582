package app

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/media"
	"github.com/sipedge/sipedge/media/policy"
	"github.com/sipedge/sipedge/media/relay"
)

// newMediaManager builds the RTP anchor from the config; nil when
// media_ports is empty (anchoring off).
func newMediaManager(cfg config.Config, rdb redis.UniversalClient, k keys.Keys, state *contract.Watcher, log zerolog.Logger, reg prometheus.Registerer) (*media.Manager, error) {
	lo, hi, on, err := config.PortRange(cfg.MediaPorts)
	if err != nil || !on {
		return nil, err // validated with the config: err is nil here
	}
	bind, adv := mediaAddrs(cfg)
	opts := []relay.PoolOption{relay.WithAdvertise(adv)}
	if bind.Is6() && bind.IsUnspecified() { // dual-stack: an address of the other family too
		if other := otherFamily(cfg, adv); other.IsValid() {
			opts = append(opts, relay.WithAdvertise(other))
		}
	}
	pool, err := relay.NewPool(bind, lo, hi, opts...)
	if err != nil {
		return nil, fmt.Errorf("media: %w", err)
	}
	mgr, err := media.New(media.Options{
		Pool: pool, Redis: rdb, Keys: k, Instance: cfg.Name,
		Defaults: mediaDefaults(cfg),
		Presence: cfg.PresenceTimeout, HeartbeatTimeout: cfg.HeartbeatTimeout, Log: log, Reg: reg,
		State: state.Snapshot, ConfEnds: state.ConfEnds(),
	})
	if err != nil {
		return nil, err
	}
	log.Info().Str("bind", bind.String()).Str("advertise", adv.String()).Int("min_port", lo).Int("max_port", hi).
		Msg("media anchoring on")
	return mgr, nil
}

// mediaAddrs picks the IP relay sockets bind to and the IP written in SDP.
// Listening on IPv4 and IPv6 addresses without a media_ip binds the relay
// dual-stack ("::"), so callers of either family can be anchored; SDP
// toward each side then names an address of that side's family
// (otherFamily gives the second one).
func mediaAddrs(cfg config.Config) (bind, adv netip.Addr) {
	bind = netip.IPv4Unspecified()
	v4, v6 := listenHosts(cfg)
	switch {
	case cfg.MediaIP != "":
		bind = netip.MustParseAddr(cfg.MediaIP)
	case v4.IsValid() && v6.IsValid():
		bind = netip.IPv6Unspecified()
		if cfg.MediaAdvertise == "" {
			if a := firstListenHost(cfg, v4, v6); a.IsValid() {
				return bind, a
			}
			return bind, v4
		}
	default:
		if a := firstListenHost(cfg, v4, v6); a.IsValid() {
			bind = a
		}
	}
	switch {
	case cfg.MediaAdvertise != "":
		adv = netip.MustParseAddr(cfg.MediaAdvertise)
	case !bind.IsUnspecified():
		adv = bind
	default:
		adv = netip.MustParseAddr("127.0.0.1")
		host := cfg.FirstAdvertise()
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
			adv = a
		}
	}
	return bind, adv
}

// listenHosts returns the first specified IPv4 and IPv6 listen hosts.
func listenHosts(cfg config.Config) (v4, v6 netip.Addr) {
	for _, l := range cfg.ListenAddrs() {
		h, _, err := net.SplitHostPort(l)
		if err != nil {
			continue
		}
		a, err := netip.ParseAddr(h)
		if err != nil || a.IsUnspecified() {
			continue
		}
		switch a = a.Unmap(); {
		case a.Is4() && !v4.IsValid():
			v4 = a
		case a.Is6() && !v6.IsValid():
			v6 = a
		}
	}
	return v4, v6
}

// firstListenHost is the host of the first listen address if it is one of
// v4, v6 (an IP, not a wildcard).
func firstListenHost(cfg config.Config, v4, v6 netip.Addr) netip.Addr {
	h, _, err := net.SplitHostPort(cfg.ListenAddrs()[0])
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(h)
	if err != nil || (a.Unmap() != v4 && a != v6) {
		return netip.Addr{}
	}
	return a.Unmap()
}

// otherFamily is the listen host of the family adv is not, for the second
// address of a dual-stack relay.
func otherFamily(cfg config.Config, adv netip.Addr) netip.Addr {
	v4, v6 := listenHosts(cfg)
	if adv.Unmap().Is4() {
		return v6
	}
	return v4
}

// mediaDefaults are the sipedge:settings defaults of the media rules taken
// from the config (at start and on SIGHUP).
func mediaDefaults(cfg config.Config) media.Settings {
	return media.Settings{MediaTimeout: cfg.MediaTimeout,
		Policy: policy.Settings{GuestsOnly: cfg.GuestsOnlyTimeout, Backstop: cfg.LastParticipantTimeout}}
}
