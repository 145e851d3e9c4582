package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/internal/version"
)

// app holds the global flags and the Redis client every command uses.
type app struct {
	redisAddr string
	prefix    string
	json      bool
	timeout   time.Duration

	rdb redis.UniversalClient
	k   keys.Keys
	now func() time.Time
}

// execute runs sipedgectl with args, writing to stdout and stderr; main and
// the tests both come through here.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := &app{now: time.Now}
	root := newRootCommand(a)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	defer a.close()
	return root.ExecuteContext(ctx)
}

func newRootCommand(a *app) *cobra.Command {
	defaultRedis := "127.0.0.1:6379"
	if v := os.Getenv("SIPEDGE_REDIS"); v != "" {
		defaultRedis = v
	}
	root := &cobra.Command{
		Use:     "sipedgectl",
		Version: version.String(),
		Short:   "Operate a sipedge cluster through its Redis contract",
		Long: "sipedgectl reads and changes the Redis keys every sipedge instance follows.\n" +
			"Writes are announced on the events channel so instances act on them at once.",
		SilenceUsage: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if a.timeout <= 0 {
				return fmt.Errorf("--timeout %v must be > 0", a.timeout)
			}
			a.k = keys.New(a.prefix)
			a.rdb = redis.NewUniversalClient(&redis.UniversalOptions{
				Addrs:       strings.Split(a.redisAddr, ","),
				DialTimeout: a.timeout,
			})
			return nil
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&a.redisAddr, "redis", defaultRedis, "Redis address, comma-separated for Cluster (env SIPEDGE_REDIS)")
	f.StringVar(&a.prefix, "prefix", keys.DefaultPrefix, "Redis key prefix")
	f.BoolVar(&a.json, "json", false, "print one JSON document instead of tables")
	f.DurationVar(&a.timeout, "timeout", 5*time.Second, "time limit for the Redis work of a command")

	root.AddCommand(newNodesCommand(a), newRingCommand(a), newConfCommand(a), newInstancesCommand(a),
		newProfilesCommand(a), newExceptionsCommand(a), newStatusCommand(a), newDrainCommand(a))
	root.AddCommand(newRouteSecretCommand(a), newHealthCommand(a), newRolloutCommand(a))
	refuseUnknownSubcommands(root)
	nameArguments(root)
	return root
}

func (a *app) close() error {
	if a.rdb == nil {
		return nil
	}
	err := a.rdb.Close()
	a.rdb = nil
	return err
}

// ctx bounds one command's Redis work by --timeout.
func (a *app) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, a.timeout)
}

// redisErr turns a Redis failure into a message naming what was being done.
func redisErr(what string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: redis did not answer within --timeout: %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// publish announces a change on the events channel so every sipedge
// instance reloads at once instead of at its next poll.
func (a *app) publish(ctx context.Context, msg string) error {
	if err := a.rdb.Publish(ctx, a.k.Events(), msg).Err(); err != nil {
		return redisErr("publish change", err)
	}
	return nil
}
