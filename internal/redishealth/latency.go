package redishealth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Latency is a go-redis hook that times every command and pipeline the
// client sends: sipedge_redis_command_duration_seconds{command,result}.
// Install it with rdb.AddHook before the client is shared.
type Latency struct {
	hist *prometheus.HistogramVec
}

var _ redis.Hook = (*Latency)(nil)

// NewLatency registers the histogram on reg.
func NewLatency(reg prometheus.Registerer) (*Latency, error) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sipedge_redis_command_duration_seconds",
		Help:    "Time of each Redis command or pipeline sent by this instance (pipeline: the whole batch), by command and result (ok, nil, error).",
		Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	}, []string{"command", "result"})
	if err := reg.Register(h); err != nil {
		return nil, fmt.Errorf("register redis latency: %w", err)
	}
	return &Latency{hist: h}, nil
}

// DialHook implements redis.Hook: dials are not timed here.
func (l *Latency) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

// ProcessHook times one command.
func (l *Latency) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		l.hist.WithLabelValues(commandName(cmd), result(err)).Observe(time.Since(start).Seconds())
		return err
	}
}

// ProcessPipelineHook times a pipeline (or MULTI/EXEC) as one observation.
func (l *Latency) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		l.hist.WithLabelValues("pipeline", result(err)).Observe(time.Since(start).Seconds())
		return err
	}
}

// commandName keeps the label set small: the command's lower-case name
// (evalsha, hgetall), never its arguments.
func commandName(cmd redis.Cmder) string {
	if n := cmd.Name(); n != "" && len(n) <= 32 {
		return strings.ToLower(n)
	}
	return "other"
}

func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, redis.Nil):
		return "nil"
	default:
		return "error"
	}
}
