package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// errNoRouteSecret is returned when Redis holds no route secret to rotate.
var errNoRouteSecret = errors.New("no route secret in redis (a configured route_secret is rotated in the config: route_secret_prev)")

// errRotatedMeanwhile is returned when another rotation changed the secret
// while this one waited.
var errRotatedMeanwhile = errors.New("the route secret changed while rotating: another rotation ran; nothing promoted")

// promoteScript makes next current and current previous, if current is
// still what the rotation started from.
var promoteScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1`)

func newRouteSecretCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "route-secret",
		Short: "Rotate the shared key of the Record-Route state (kept in Redis)",
	}
	rotate := &cobra.Command{
		Use:   "rotate [--settle D]",
		Short: "Make a new route secret current; routes of the old one keep routing",
		Long: "Rotation in two steps, so no in-dialog request is refused on any instance:\n" +
			"the new secret is written as <prefix>route_secret_next (every instance accepts it\n" +
			"within 1 s), then after --settle it becomes <prefix>route_secret and the old one\n" +
			"<prefix>route_secret_prev (still accepted). Drop the old one with `route-secret\n" +
			"drop-prev` once the longest dialog set up before has ended.",
		Args: cobra.NoArgs,
	}
	settle := rotate.Flags().Duration("settle", 3*time.Second, "wait between staging and promoting the new secret (> the instances' 1 s poll)")
	rotate.RunE = func(cmd *cobra.Command, _ []string) error { return a.routeSecretRotate(cmd, *settle) }
	cmd.AddCommand(rotate, &cobra.Command{
		Use:   "drop-prev",
		Short: "Stop accepting routes made with the previous route secret",
		Args:  cobra.NoArgs,
		RunE:  a.routeSecretDropPrev,
	}, &cobra.Command{
		Use:   "show",
		Short: "Show fingerprints (never the secrets) of the current, next and previous route secret",
		Args:  cobra.NoArgs,
		RunE:  a.routeSecretShow,
	})
	return cmd
}

func (a *app) routeSecretRotate(cmd *cobra.Command, settle time.Duration) error {
	if settle < 0 {
		return fmt.Errorf("--settle %v must be >= 0", settle)
	}
	ctx, cancel := a.ctx(cmd)
	old, err := a.rdb.Get(ctx, a.k.RouteSecret()).Result()
	cancel()
	switch {
	case errors.Is(err, redis.Nil) || (err == nil && old == ""):
		return errNoRouteSecret
	case err != nil:
		return redisErr("read route secret", err)
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("generate route secret: %w", err)
	}
	next := hex.EncodeToString(b[:])
	ctx, cancel = a.ctx(cmd)
	err = a.rdb.Set(ctx, a.k.RouteSecretNext(), next, 0).Err()
	cancel()
	if err != nil {
		return redisErr("stage next route secret", err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "staged %s as next route secret; promoting in %s\n", fingerprint(next), settle)
	select {
	case <-cmd.Context().Done():
		return cmd.Context().Err()
	case <-time.After(settle):
	}
	ctx, cancel = a.ctx(cmd)
	defer cancel()
	n, err := promoteScript.Run(ctx, a.rdb, []string{a.k.RouteSecret(), a.k.RouteSecretNext(), a.k.RouteSecretPrev()},
		old, next).Int()
	if err != nil {
		return redisErr("promote route secret", err)
	}
	if n != 1 {
		return errRotatedMeanwhile
	}
	fmt.Fprintf(cmd.OutOrStdout(), "route secret rotated: current %s, previous %s still accepted until `route-secret drop-prev`\n",
		fingerprint(next), fingerprint(old))
	return nil
}

func (a *app) routeSecretDropPrev(cmd *cobra.Command, _ []string) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	n, err := a.rdb.Del(ctx, a.k.RouteSecretPrev()).Result()
	if err != nil {
		return redisErr("delete previous route secret", err)
	}
	if n == 0 {
		fmt.Fprintln(cmd.OutOrStdout(), "no previous route secret")
		return nil
	}
	fmt.Fprintln(cmd.OutOrStdout(), "previous route secret dropped: its routes are refused within 1 s")
	return nil
}

type routeSecretRow struct {
	Current string `json:"current"`
	Next    string `json:"next,omitempty"`
	Prev    string `json:"prev,omitempty"`
}

func (a *app) routeSecretShow(cmd *cobra.Command, _ []string) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	vals, err := a.rdb.MGet(ctx, a.k.RouteSecret(), a.k.RouteSecretNext(), a.k.RouteSecretPrev()).Result()
	if err != nil {
		return redisErr("read route secrets", err)
	}
	fp := func(v any) string {
		s, _ := v.(string)
		return fingerprint(s)
	}
	row := routeSecretRow{Current: fp(vals[0]), Next: fp(vals[1]), Prev: fp(vals[2])}
	if a.json {
		return printJSON(cmd.OutOrStdout(), row)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "current %s\nnext    %s\nprev    %s\n", row.Current, orDash(row.Next), orDash(row.Prev))
	return nil
}

// fingerprint names a secret without revealing it (sipedge logs the same).
func fingerprint(s string) string {
	if s == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}
