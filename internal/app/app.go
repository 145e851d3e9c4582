// Package app wires the sipedge daemon: Redis (real or embedded), the ring
// watcher, admission, the SIP proxy, the instance heartbeat and the admin
// HTTP endpoints.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/internal/admin"
	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/internal/embedredis"
	"github.com/sipedge/sipedge/internal/instance"
	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/internal/logging"
	"github.com/sipedge/sipedge/internal/redishealth"
	"github.com/sipedge/sipedge/proxy"
	"github.com/sipedge/sipedge/ring"
)

// Version is reported in the Server header and logs.
var Version = "dev"

// Run starts sipedge and blocks until ctx is done, a part fails, or a
// signal of ctl (at most one) stopped it (lifecycle.go).
func Run(ctx context.Context, cfg config.Config, log zerolog.Logger, ctl ...Control) error {
	applyGC(cfg, log) // gc.go
	redisAddr := cfg.Redis
	if redisAddr == "" {
		emb, err := embedredis.Start("127.0.0.1:6379")
		if err != nil {
			// 6379 taken (a real Redis runs here?): any free loopback port.
			emb, err = embedredis.Start("127.0.0.1:0")
			if err != nil {
				return err
			}
		}
		defer emb.Close()
		redisAddr = emb.Addr()
		log.Warn().Str("redis", redisAddr).Msg("no --redis given: embedded Redis started (demo only; point real deployments at a real Redis)")
	}
	redis.SetLogger(logging.RedisLogger{Log: log})
	rdb := redis.NewUniversalClient(redisOptions(redisAddr, cfg.RedisTimeout))
	defer rdb.Close()
	if err := waitForRedis(ctx, rdb, redisAddr, cfg.StartupRetry, log); err != nil {
		return err
	}
	k := keys.New(cfg.Prefix)

	secret, err := routeSecret(ctx, rdb, k, cfg.RouteKey)
	if err != nil {
		return err
	}
	tsec, err := loadTrustSecrets(ctx, rdb, k, cfg)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	adm := &lateAdmitter{}
	mgr, err := newMediaManager(cfg, rdb, k, log.With().Str("component", "media").Logger(), reg)
	if err != nil {
		return err
	}
	var trust lateTrust
	popts := proxy.Options{Listen: cfg.Listen, Advertise: cfg.Advertise, RouteSecret: secret,
		UserAgent: "sipedge/" + Version, UDPBuffer: cfg.UDPBuffer, Instance: cfg.Name, Trust: trust.check,
		FailoverAttempts: cfg.FailoverAttempts, FailoverTimeout: cfg.FailoverTimeout,
		Wire: wireOptions(cfg)}
	tsec.apply(&popts)
	popts.Limits = limitOptions(cfg)
	if mgr != nil {
		popts.Media = mgr
	}
	px, err := proxy.New(popts, adm, log.With().Str("component", "proxy").Logger(), reg)
	if err != nil {
		return err
	}
	sip.SetDefaultLogger(px.SlogLogger())
	state, err := admission.NewStateWatcher(rdb, k, stateDefaults(cfg), cfg.ResyncInterval, log.With().Str("component", "state").Logger(), reg)
	if err != nil {
		return err
	}
	if err := state.Start(ctx); err != nil {
		return fmt.Errorf("load cluster state: %w", err)
	}
	watcher, err := ring.NewWatcher(rdb, k, ring.WatcherOptions{
		ResyncInterval: cfg.ResyncInterval,
		EmptyGrace:     cfg.EmptyRingGrace,
		Policy:         state,
		Health: ring.HealthOptions{HeartbeatTimeout: cfg.HeartbeatTimeout, ProbeInterval: cfg.ProbeInterval,
			ProbeTimeout: cfg.ProbeTimeout, DownAfter: cfg.ProbeDown, UpAfter: cfg.ProbeUp, SuspectHold: cfg.SuspectHold},
	}, px.Pinger(), log.With().Str("component", "ring").Logger(), reg)
	if err != nil {
		return err
	}
	state.OnPolicyChange(watcher.Refresh)
	networks, _ := config.TrustedPrefixes(cfg.TrustedNetworks) // validated with the config
	trust.set(newTrust(watcher, networks))
	if err := watcher.Start(ctx); err != nil {
		return fmt.Errorf("load media nodes: %w", err)
	}
	ledger, err := admission.NewLedger(rdb, k, admission.LedgerOptions{Self: cfg.Name, Interval: time.Second,
		LiveFor: cfg.HeartbeatTimeout, HeartbeatTimeout: cfg.HeartbeatTimeout, ConfTTL: cfg.ConfTTL, RedisTimeout: cfg.RedisTimeout,
	}, px, log.With().Str("component", "counts").Logger(), reg)
	if err != nil {
		return err
	}
	a, err := admission.NewAdmitter(watcher, state, admission.NewConfStore(rdb, k, cfg.ConfTTL), admission.Options{
		Self:             admission.Self{Name: cfg.Name, Site: cfg.Site, Server: cfg.Server},
		HeartbeatTimeout: cfg.HeartbeatTimeout, RedisTimeout: cfg.RedisTimeout, Ledger: ledger,
	}, log.With().Str("component", "admission").Logger(), reg)
	if err != nil {
		return err
	}
	adm.set(a)
	health, err := redishealth.New(rdb, redishealth.Options{Timeout: cfg.RedisTimeout}, log.With().Str("component", "redis").Logger(), reg)
	if err != nil {
		return err
	}

	pub := instance.NewPublisher(rdb, k, instance.Info{Name: cfg.Name, Site: cfg.Site, Server: cfg.Server, Addr: px.Addr()},
		time.Second, func() instance.State {
			v := a.Instance()
			// The dialog set is the truth: ends seen by other instances are
			// noted back to this one (admission.Ledger).
			d := px.ActiveDialogs()
			return instance.State{Name: admission.InstanceState(v, d), Dialogs: d, Deserviced: v.Deserviced, HeldBack: v.HeldBack}
		}, log)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return px.Serve(gctx) })
	g.Go(func() error { return watcher.Run(gctx) })
	g.Go(func() error { return state.Run(gctx) })
	g.Go(func() error {
		enforceDrains(gctx, time.Second, watcher, state, px, log.With().Str("component", "drain").Logger())
		return nil
	})
	g.Go(func() error { pub.Run(gctx); return nil })
	g.Go(func() error {
		watchSecrets(gctx, rdb, k, cfg, secret, tsec, px, log.With().Str("component", "secrets").Logger())
		return nil
	})
	g.Go(func() error { ledger.Run(gctx); return nil })
	g.Go(func() error { health.Run(gctx); return nil })
	if mgr != nil {
		mgr.SetEnder(px)
		g.Go(func() error { return mgr.Run(gctx) })
	}
	if cfg.Admin != "" {
		adminSrv, err := admin.Listen(cfg.Admin, admin.Sources{
			Gatherer: reg,
			Ready: func() error {
				if err := health.Ready(); err != nil {
					return err
				}
				return ready(a.Instance())
			},
			Status: func() any { return status(cfg, redisAddr, px, watcher, a, mgr) },
		}, log)
		if err != nil {
			return err
		}
		log.Info().Str("admin", adminSrv.Addr()).Msg("admin HTTP listening (/metrics /healthz /readyz /api/status)")
		g.Go(func() error { return adminSrv.Serve(gctx) })
	}
	lc := &lifecycle{cfg: cfg, log: log.With().Str("component", "lifecycle").Logger(), admit: a, state: state,
		dialogs: px.ActiveDialogs, trusted: func(n []netip.Prefix) { trust.set(newTrust(watcher, n)) },
		beat: func() { _ = pub.Beat(gctx) }}
	if mgr != nil {
		lc.media = mgr
	}
	g.Go(func() error { return lc.run(gctx, firstControl(ctl)) })
	log.Info().Str("instance", cfg.Name).Str("site", cfg.Site).Str("server", cfg.Server).
		Str("sip", px.Addr()).Str("redis", redisAddr).Msg("sipedge started")
	err = g.Wait()
	if errors.Is(err, errStopped) {
		err = nil
	}
	log.Info().Msg("sipedge stopped")
	return err
}

// ready is /readyz: a deserviced instance (one that answers 503 to new
// dialogs) tells HTTP load balancers to drain it too.
func ready(v admission.InstanceVerdict) error {
	if v.ShuttingDown {
		return errors.New("shutting down")
	}
	if v.Reject {
		return fmt.Errorf("deserviced by profile %s", strings.Join(v.Profiles, ","))
	}
	return nil
}

// waitForRedis retries PING for up to budget, then fails with a message an
// operator can act on, instead of hanging.
func waitForRedis(ctx context.Context, rdb redis.UniversalClient, addr string, budget time.Duration, log zerolog.Logger) error {
	deadline := time.Now().Add(budget)
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis at %s unreachable after %d attempts over %s: %w", addr, attempt, budget, err)
		}
		log.Warn().Err(err).Str("redis", addr).Int("attempt", attempt).Msg("redis not reachable yet, retrying")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// routeSecret returns the configured secret, or the one every instance
// shares through Redis (created by the first instance that starts).
func routeSecret(ctx context.Context, rdb redis.UniversalClient, k keys.Keys, configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate route secret: %w", err)
	}
	if err := rdb.SetNX(ctx, k.RouteSecret(), hex.EncodeToString(b[:]), 0).Err(); err != nil {
		return "", fmt.Errorf("store route secret: %w", err)
	}
	s, err := rdb.Get(ctx, k.RouteSecret()).Result()
	if err != nil {
		return "", fmt.Errorf("read route secret: %w", err)
	}
	if s == "" {
		return "", errors.New("route secret in redis is empty")
	}
	return s, nil
}

// lateAdmitter lets the proxy be built (it owns the prober the ring watcher
// needs) before the admitter that needs the watcher exists.
type lateAdmitter struct{ a *admission.Admitter }

func (l *lateAdmitter) set(a *admission.Admitter) { l.a = a }

func (l *lateAdmitter) Admit(ctx context.Context, r admission.Request) admission.Verdict {
	return l.a.Admit(ctx, r)
}

func (l *lateAdmitter) DialogStarted(ctx context.Context, confID, node, callID string) {
	l.a.DialogStarted(ctx, confID, node, callID)
}

func (l *lateAdmitter) DialogEnded(ctx context.Context, confID, node, instance, callID string) {
	l.a.DialogEnded(ctx, confID, node, instance, callID)
}

func (l *lateAdmitter) DialogEndedElsewhere(ctx context.Context, owner, confID, node, callID, key string) {
	l.a.DialogEndedElsewhere(ctx, owner, confID, node, callID, key)
}

// limitOptions are the proxy's flood limits from the config.
func limitOptions(cfg config.Config) proxy.LimitOptions {
	return proxy.LimitOptions{
		SourceRate: cfg.SourceRate, SourceBurst: cfg.SourceBurst, SourceDropRate: cfg.SourceDropRate,
		SourcePorts: cfg.SourcePorts, SourceHalfOpen: cfg.SourceHalfOpen,
		MaxDialogs: cfg.MaxDialogs, MaxHalfOpen: cfg.MaxHalfOpen, MaxPortsPercent: cfg.MaxPortsPercent,
		MaxMemoryBytes: uint64(cfg.MaxMemoryMB) << 20, RetryAfter: cfg.RetryAfter,
	}
}

// The proxy fails new calls over only through an Admitter that can.
var _ proxy.Failoverer = (*lateAdmitter)(nil)

func (l *lateAdmitter) Failover(ctx context.Context, r admission.Request, failed string, tried []string) admission.Verdict {
	return l.a.Failover(ctx, r, failed, tried)
}

func (l *lateAdmitter) Healthy(node string) bool { return l.a.Healthy(node) }

// stateDefaults are the sipedge:settings defaults admission takes from the
// config (at start and on SIGHUP).
func stateDefaults(cfg config.Config) admission.Settings {
	return admission.Settings{RetryAfter: cfg.RetryAfter, DrainTimeout: cfg.DrainTimeout,
		DrainBye: cfg.DrainAction == "bye", SlowStart: cfg.SlowStart}
}
