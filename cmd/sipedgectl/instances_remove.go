package main

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// newInstancesRemoveCommand forgets a stopped instance: an instance that
// stops for good stays listed (dead) until an operator removes it.
func newInstancesRemoveCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Forget a stopped sipedge instance (its hash, its share of the counts, its end notes)",
		Long: "remove deletes what a sipedge instance wrote about itself: its entry in the\n" +
			"instances set, its hash, its share of the dialog counts and its end notes.\n" +
			"A live instance (heartbeat younger than --heartbeat-timeout) is refused unless\n" +
			"--force: it would write itself back within a second anyway.",
		Args: cobra.ExactArgs(1), // named by nameArguments (usage.go)
	}
	hb := cmd.Flags().Duration("heartbeat-timeout", 5*time.Second, "an instance is alive while its heartbeat is younger than this")
	force := cmd.Flags().Bool("force", false, "remove even a live instance")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		name := args[0]
		ctx, cancel := a.ctx(cmd)
		defer cancel()
		rows, err := a.loadInstances(ctx, *hb)
		if err != nil {
			return err
		}
		var found *instanceRow
		for i := range rows {
			if rows[i].Name == name {
				found = &rows[i]
			}
		}
		if found == nil {
			return fmt.Errorf("instances remove %q: no such instance in %s", name, a.k.Instances())
		}
		if found.Alive && !*force {
			age := "fresh"
			if found.AgeMs != nil {
				age = (time.Duration(*found.AgeMs) * time.Millisecond).String() + " old"
			}
			return fmt.Errorf("instances remove %q: it is alive (heartbeat %s); stop it first, or --force", name, age)
		}
		if _, err := a.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.SRem(ctx, a.k.Instances(), name)
			p.Del(ctx, a.k.Instance(name), a.k.Calls(name), a.k.Ended(name))
			return nil
		}); err != nil {
			return redisErr("remove instance "+name, err)
		}
		if err := a.publish(ctx, "instance:"+name); err != nil {
			return err
		}
		return a.done(cmd, map[string]any{"removed": name}, "instance %s removed", name)
	}
	return cmd
}
