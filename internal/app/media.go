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
	pool, err := relay.NewPool(bind, lo, hi, relay.WithAdvertise(adv))
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
func mediaAddrs(cfg config.Config) (bind, adv netip.Addr) {
	bind = netip.IPv4Unspecified()
	if cfg.MediaIP != "" {
		bind = netip.MustParseAddr(cfg.MediaIP)
	} else if h, _, err := net.SplitHostPort(cfg.ListenAddrs()[0]); err == nil {
		if a, err := netip.ParseAddr(h); err == nil {
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

// mediaDefaults are the sipedge:settings defaults of the media rules taken
// from the config (at start and on SIGHUP).
func mediaDefaults(cfg config.Config) media.Settings {
	return media.Settings{MediaTimeout: cfg.MediaTimeout,
		Policy: policy.Settings{GuestsOnly: cfg.GuestsOnlyTimeout, Backstop: cfg.LastParticipantTimeout}}
}
