// Command confnode is a small reference media (conference) node for sipedge:
// a real SIP UA that answers INVITEs with SDP and keeps itself registered in
// Redis with heartbeats and load (SPEC §1, §2).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/internal/logging"
	"github.com/sipedge/sipedge/internal/version"
)

// config is everything confnode is told on its command line.
type config struct {
	Name              string
	Listen            string
	Advertise         string
	Redis             string
	Prefix            string
	Site              string
	Server            string
	Weight            float64
	Capacity          int
	HeartbeatInterval time.Duration
	AnswerDelay       time.Duration
	RTP               bool
	Proxy             string
	DialTimeout       time.Duration
	NodeSecret        string
	LogFormat         string
	LogLevel          string
	TLSListen         string // tls.go
	TLSCert, TLSKey   string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newCommand().ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	host, _ := os.Hostname()
	cfg := config{}
	cmd := &cobra.Command{
		Use:     "confnode",
		Version: version.String(),
		Short:   "Reference media node for sipedge: answers SIP calls and registers itself in Redis",
		Long: "confnode answers INVITE with an SDP answer (PCMU/8000), handles ACK, BYE, CANCEL,\n" +
			"OPTIONS, REGISTER and SUBSCRIBE, and writes its node hash and heartbeat to Redis.\n" +
			"\n" +
			"Media (--rtp, on by default): every answered call sends PCMU silence (20 ms packets)\n" +
			"to the address of the remote SDP, or to where the remote's RTP comes from (symmetric\n" +
			"RTP), and counts the RTP it receives (rtp_sent, rtp_received in the call ended log).\n" +
			"\n" +
			"Dialing (ADP / admin participants): confnode takes JSON dial requests from the Redis\n" +
			"list <prefix>dial:<name> (sipedgectl conf dial pushes them) and calls the URI through\n" +
			"sipedge at --proxy, as a participant of the conference, with X-Sipedge-* headers.\n" +
			"Without --proxy, dial requests are taken off the list and refused.\n" +
			"\n" +
			"Every flag can also be set as CONFNODE_<FLAG> (e.g. CONFNODE_REDIS, CONFNODE_HEARTBEAT_INTERVAL,\n" +
			"CONFNODE_RTP, CONFNODE_PROXY).",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags(), "CONFNODE_")
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.validate(); err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), cfg.LogFormat, cfg.LogLevel)
			if err != nil {
				return err
			}
			// go-redis logs pool trouble on its own; keep it in our stream.
			redis.SetLogger(redisLogger{log.With().Str("component", "redis").Logger()})
			return run(cmd.Context(), cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", host, "node name (member of the nodes set)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:5070", "SIP listen address, UDP and TCP")
	f.StringVar(&cfg.Advertise, "advertise", "", "host:port written to Redis and Contact (default: --listen)")
	f.StringVar(&cfg.Redis, "redis", "", "Redis address (required)")
	f.StringVar(&cfg.Prefix, "prefix", keys.DefaultPrefix, "Redis key prefix")
	f.StringVar(&cfg.Site, "site", "default", "site written to the node hash")
	f.StringVar(&cfg.Server, "server", host, "server (host machine) written to the node hash")
	f.Float64Var(&cfg.Weight, "weight", 100, "ring weight, written only when the node hash has none yet")
	f.IntVar(&cfg.Capacity, "capacity", 100, "calls at which reported load is 1")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", time.Second, "how often heartbeat and load are written")
	f.DurationVar(&cfg.AnswerDelay, "answer-delay", 0, "ring (180) this long before answering; lets callers CANCEL")
	f.BoolVar(&cfg.RTP, "rtp", true, "send PCMU silence on every call and count received RTP (--rtp=false: SDP only)")
	f.StringVar(&cfg.Proxy, "proxy", "", "sipedge host:port (UDP) that calls from the dial queue go through; empty: dialing refused")
	f.DurationVar(&cfg.DialTimeout, "dial-timeout", 60*time.Second, "give up (CANCEL) a dialed call not answered within this time")
	f.StringVar(&cfg.NodeSecret, "node-secret", "", "key dialed calls are signed with (X-Sipedge-Auth); empty: the shared one in Redis (<prefix>node_secret)")
	f.StringVar(&cfg.TLSListen, "tls-listen", "", "SIP over TLS listen host:port; the node then registers this address with transport tls (needs --tls-cert, --tls-key)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate file of --tls-listen")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key file of --tls-cert")
	f.StringVar(&cfg.LogFormat, "log-format", "json", "log format: json or console")
	f.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

func (c config) validate() error {
	switch {
	case c.Redis == "":
		return errors.New("confnode: --redis is required")
	case c.Name == "":
		return errors.New("confnode: --name is empty")
	case c.Weight < 0:
		return fmt.Errorf("confnode: --weight %v must be >= 0", c.Weight)
	case c.Capacity <= 0:
		return fmt.Errorf("confnode: --capacity %d must be > 0", c.Capacity)
	case c.HeartbeatInterval <= 0:
		return fmt.Errorf("confnode: --heartbeat-interval %v must be > 0", c.HeartbeatInterval)
	case c.AnswerDelay < 0:
		return fmt.Errorf("confnode: --answer-delay %v must be >= 0", c.AnswerDelay)
	case c.DialTimeout <= 0:
		return fmt.Errorf("confnode: --dial-timeout %v must be > 0", c.DialTimeout)
	}
	if c.Proxy != "" {
		_, port, err := net.SplitHostPort(c.Proxy)
		if p, perr := strconv.Atoi(port); err != nil || perr != nil || p <= 0 || p > 65535 {
			return fmt.Errorf("confnode: --proxy %q: want host:port", c.Proxy)
		}
	}
	return c.validateTLS()
}

// applyEnv sets every flag not given on the command line from
// <prefix><FLAG_NAME> when that variable is set.
func applyEnv(fs *pflag.FlagSet, prefix string) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("confnode: %s=%q: %w", name, v, e)
			}
		}
	})
	return err
}

func newLogger(w io.Writer, format, level string) (zerolog.Logger, error) {
	log, err := logging.New(w, format, level)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("confnode: %w", err)
	}
	return log.With().Str("service", "confnode").Logger(), nil
}

// redisLogger routes go-redis's internal messages (dial failures, retries)
// to zerolog at debug level: failures that matter surface as command errors.
type redisLogger struct{ log zerolog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug().Msgf(format, v...)
}

// run serves until ctx ends (SIGINT/SIGTERM).
func run(ctx context.Context, cfg config, log zerolog.Logger) error {
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: strings.Split(cfg.Redis, ",")})
	defer rdb.Close()
	n, err := newNode(cfg, log, rdb)
	if err != nil {
		return err
	}
	if err := n.listen(); err != nil {
		return err
	}
	if err := n.listenTLS(); err != nil {
		n.udp.Close()
		n.tcp.Close()
		return err
	}
	return n.serve(ctx)
}
