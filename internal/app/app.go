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
	"github.com/sipedge/sipedge/internal/certs"
	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/embedredis"
	"github.com/sipedge/sipedge/internal/instance"
	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/internal/logging"
	"github.com/sipedge/sipedge/internal/redishealth"
	"github.com/sipedge/sipedge/internal/version"
	"github.com/sipedge/sipedge/internal/view"
	"github.com/sipedge/sipedge/media"
	"github.com/sipedge/sipedge/proxy"
	"github.com/sipedge/sipedge/ring"
)

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
	// sipedge's own metrics, and apart from them the runtime's and the
	// process's: the live view sums some of sipedge's counters every
	// second (viewOf), and gathering the other two each time would stop the
	// world (ReadMemStats) and list /proc/self/fd, thousands of relay
	// sockets, on the one P that also relays RTP. /metrics serves both.
	metrics := prometheus.NewRegistry() // served at /metrics
	// Every part registers here; the counters the live view sums also go
	// into a registry of their own, the one it gathers each second.
	reg := newFailureRegisterer(metrics)
	runtimeReg := prometheus.NewRegistry()
	// The runtime's GC and scheduler figures besides the defaults: how
	// long runnable goroutines waited (go_sched_latencies_seconds) and what
	// each cycle scanned, for reading a set-up tail against the collector
	// (BENCHMARKS.md "Set-up tail and GC cycles"). This registry is
	// gathered only by /metrics.
	runtimeReg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsGC, collectors.MetricsScheduler)), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	health, err := redishealth.New(rdb, redishealth.Options{Timeout: cfg.RedisTimeout}, log.With().Str("component", "redis").Logger(), reg)
	if err != nil {
		return err
	}
	if err := health.WaitUp(ctx, redisAddr, cfg.StartupRetry); err != nil {
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

	lat, err := redishealth.NewLatency(reg)
	if err != nil {
		return err
	}
	rdb.AddHook(lat) // before any other part shares the client

	// Each part is built after the parts it takes: the contract watcher
	// (one subscription; ring, admission and media read its snapshots),
	// media (the proxy uses it; it asks for calls to be ended through
	// EndRequests), the proxy's SIP endpoint (its prober for the ring
	// watcher, its dialog set for the ledger), the ring watcher, trust,
	// the ledger, the admitter, and last the proxy on the endpoint.
	contractW, err := contract.NewWatcher(rdb, k, contract.Options{Every: cfg.ResyncInterval, Defaults: stateDefaults(cfg)},
		log.With().Str("component", "state").Logger(), reg)
	if err != nil {
		return err
	}
	mgr, err := newMediaManager(cfg, rdb, k, contractW, log.With().Str("component", "media").Logger(), reg)
	if err != nil {
		return err
	}
	var store *certs.Store
	if cfg.TLSCert != "" && (cfg.TLSListen != "" || cfg.WSSListen != "") {
		if store, err = certs.Load(cfg.TLSCert, cfg.TLSKey); err != nil {
			return err
		}
	}
	listen := cfg.ListenAddrs()
	popts := proxy.Options{Listen: listen[0], ListenExtra: listen[1:], Advertise: cfg.FirstAdvertise(), RouteSecret: secret,
		UserAgent: "sipedge/" + version.Short(), UDPBuffer: cfg.UDPBuffer, Instance: cfg.Name,
		FailoverAttempts: cfg.FailoverAttempts, FailoverTimeout: cfg.FailoverTimeout,
		Wire: wireOptions(cfg)}
	// Per-address advertise, TLS/WS/WSS lists (listen.go).
	listenSpecs(cfg, &popts)
	var nodeCA *nodeCA
	if popts.Secure.NodeTLS, nodeCA, err = nodeTLSConfig(cfg); err != nil { // nodetls.go
		return err
	}
	if nodeCA != nil {
		popts.Secure.NodeTLSClient = nodeCA.Client // swapped on SIGHUP
	}
	if store != nil {
		popts.Secure.TLS = store.Config()
	}
	tsec.apply(&popts)
	popts.Limits = limitOptions(cfg)
	if mgr != nil {
		popts.Media = mgr
	}
	ep, err := proxy.NewEndpoint(popts, log.With().Str("component", "proxy").Logger(), reg)
	if err != nil {
		return err
	}
	serving := false
	defer func() {
		if !serving { // a later part failed: free the SIP ports
			ep.Close()
		}
	}()
	if err := contractW.Start(ctx); err != nil {
		return fmt.Errorf("load cluster state: %w", err)
	}
	state := admission.NewStateWatcher(contractW)
	watcher, err := ring.NewWatcher(rdb, k, ring.WatcherOptions{
		Source:     contractW,
		EmptyGrace: cfg.EmptyRingGrace,
		Health: ring.HealthOptions{HeartbeatTimeout: cfg.HeartbeatTimeout, ProbeInterval: cfg.ProbeInterval,
			ProbeTimeout: cfg.ProbeTimeout, DownAfter: cfg.ProbeDown, UpAfter: cfg.ProbeUp, SuspectHold: cfg.SuspectHold},
	}, ep.Pinger(), log.With().Str("component", "ring").Logger(), reg)
	if err != nil {
		return err
	}
	networks, _ := config.TrustedPrefixes(cfg.TrustedNetworks) // validated with the config
	trust := newTrust(watcher, networks)
	if err := watcher.Start(ctx); err != nil {
		return fmt.Errorf("load media nodes: %w", err)
	}
	ledger, err := admission.NewLedger(rdb, k, admission.LedgerOptions{Self: cfg.Name, Interval: time.Second,
		LiveFor: cfg.HeartbeatTimeout, HeartbeatTimeout: cfg.HeartbeatTimeout, ConfTTL: cfg.ConfTTL, RedisTimeout: cfg.RedisTimeout,
		Coalesce: ledgerWindow(cfg.CountsWindow),
	}, ep.Dialogs(), log.With().Str("component", "counts").Logger(), reg)
	if err != nil {
		return err
	}
	contractW.OnConfEnd(ledger.ConfEnded)     // legs being torn down answer no placement
	contractW.OnConfPlaced(ledger.ConfPlaced) // admission/unplaced.go: new conferences placed without a lookup
	contractW.OnConfMoved(ledger.ConfMoved)   // admission/sticky.go: a failover elsewhere moved a conference
	contractW.OnPlacementsSubscribed(ledger.PlacementsSubscribed)
	a, err := admission.NewAdmitter(watcher, state, admission.NewConfStore(rdb, k, cfg.ConfTTL), admission.Options{
		Self:             admission.Self{Name: cfg.Name, Site: cfg.Site, Server: cfg.Server},
		HeartbeatTimeout: cfg.HeartbeatTimeout, RedisTimeout: cfg.RedisTimeout, Ledger: ledger,
		RedirectDeserviced: cfg.DeserviceAnswer == "302",
	}, log.With().Str("component", "admission").Logger(), reg)
	if err != nil {
		return err
	}
	px := ep.Proxy(a, trust.check)
	sip.SetDefaultLogger(px.SlogLogger())
	drains := ring.NewDrainEnforcer(watcher, drainPolicy{state}, endNodeCalls(px), ring.DrainOptions{},
		log.With().Str("component", "drain").Logger())

	pub := instance.NewPublisher(rdb, k, instance.Info{Name: cfg.Name, Site: cfg.Site, Server: cfg.Server, Addr: px.Addr()},
		time.Second, func() instance.State {
			v := a.Instance()
			// The dialog set is the truth: ends seen by other instances are
			// noted back to this one (admission.Ledger).
			d := px.ActiveDialogs()
			return instance.State{Name: admission.InstanceState(v, d), Dialogs: d, Deserviced: v.Deserviced, HeldBack: v.HeldBack}
		}, log)

	views := view.NewPublisher(rdb, k, cfg.Name, time.Second,
		viewOf(cfg.Name, watcher, contractW, reg.failures, &view.Window{}, &view.Window{}), log.With().Str("component", "view").Logger())

	// Every listener is bound before any part runs: a failure here
	// leaves nothing running.
	var adminSrv *admin.Server
	if cfg.Admin != "" {
		adminSrv, err = admin.Listen(cfg.Admin, admin.Sources{
			Gatherer: prometheus.Gatherers{metrics, runtimeReg},
			Pprof:    cfg.AdminPprof == "on",
			Ready: func() error {
				if err := health.Ready(); err != nil {
					return err
				}
				return ready(a.Instance())
			},
			Status: func() any { return status(cfg, redisAddr, px, watcher, a, mgr, contractW.Snapshot()) },
			Cluster: func(ctx context.Context) any {
				return clusterSources{self: cfg.Name, rdb: rdb, k: k, state: contractW, nodes: watcher,
					hbTimeout: cfg.HeartbeatTimeout}.doc(ctx, time.Now())
			},
		}, log)
		if err != nil {
			return err
		}
		log.Info().Str("admin", adminSrv.Addr()).Msg("admin HTTP listening (/metrics /healthz /readyz /api/status)")
	}

	g, gctx := errgroup.WithContext(ctx)
	serving = true // Serve closes the endpoint when it returns
	g.Go(func() error { return px.Serve(gctx) })
	g.Go(func() error { return watcher.Run(gctx) })
	g.Go(func() error { return contractW.Run(gctx) })
	g.Go(func() error { drains.Run(gctx); return nil })
	g.Go(func() error { pub.Run(gctx); return nil })
	g.Go(func() error { views.Run(gctx); return nil })
	g.Go(func() error {
		watchSecrets(gctx, rdb, k, cfg, secret, tsec, px, log.With().Str("component", "secrets").Logger())
		return nil
	})
	g.Go(func() error { ledger.Run(gctx); return nil })
	g.Go(func() error { health.Run(gctx); return nil })
	if mgr != nil {
		g.Go(func() error { return mgr.Run(gctx) })
		g.Go(func() error { media.ServeEnds(gctx, mgr.EndRequests(), px); return nil })
	}
	if adminSrv != nil {
		g.Go(func() error { return adminSrv.Serve(gctx) })
	}
	lc := &lifecycle{cfg: cfg, log: log.With().Str("component", "lifecycle").Logger(), admit: a, state: state,
		dialogs: px.ActiveDialogs, trusted: trust.setNetworks,
		beat: func() { _ = pub.Beat(gctx) }}
	if store != nil {
		lc.certs = store
	}
	if nodeCA != nil {
		lc.nodeCA = nodeCA
	}
	if mgr != nil {
		lc.media = mgr
	}
	g.Go(func() error { return lc.run(gctx, firstControl(ctl)) })
	log.Info().Str("instance", cfg.Name).Str("site", cfg.Site).Str("server", cfg.Server).
		Str("sip", px.Addr()).Str("redis", redisAddr).Str("version", version.String()).Msg("sipedge started")
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
var _ proxy.Failoverer = (*admission.Admitter)(nil)

// stateDefaults are the sipedge:settings defaults the contract watcher
// takes from the config (at start and on SIGHUP): admission's and media's.
func stateDefaults(cfg config.Config) admission.Settings {
	return admission.Settings{RetryAfter: cfg.RetryAfter, DrainTimeout: cfg.DrainTimeout,
		DrainBye: cfg.DrainAction == "bye", SlowStart: cfg.SlowStart,
		MediaTimeout: cfg.MediaTimeout, GuestsOnly: cfg.GuestsOnlyTimeout, Backstop: cfg.LastParticipantTimeout}
}

// ledgerWindow is the Ledger's Coalesce for the counts_window setting,
// where 0 means "each change at once" (the Ledger's negative).
func ledgerWindow(window time.Duration) time.Duration {
	if window <= 0 {
		return -1
	}
	return window
}
