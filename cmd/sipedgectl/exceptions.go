package main

import (
	"errors"
	"fmt"
	"sort"

	"github.com/spf13/cobra"
)

// errNotException is returned when removing a name that is not an exception.
var errNotException = errors.New("not in the exceptions")

func newExceptionsCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exceptions",
		Short: "Instances exempt from the 503 rule: they keep admitting while deserviced",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the exception instance names",
		Args:  cobra.NoArgs,
		RunE:  a.exceptionsList,
	}, &cobra.Command{
		Use:   "add NAME",
		Short: "Exempt an instance from the 503 rule",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.exceptionsAdd(cmd, args[0]) },
	}, &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove an instance from the exceptions",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.exceptionsRemove(cmd, args[0]) },
	})
	return cmd
}

type exceptionRow struct {
	Name  string `json:"name"`
	Known bool   `json:"known_instance"` // in the instances set
}

func (a *app) exceptionsList(cmd *cobra.Command, _ []string) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	names, err := a.rdb.SMembers(ctx, a.k.Exceptions()).Result()
	if err != nil {
		return redisErr("read exceptions", err)
	}
	insts, err := a.rdb.SMembers(ctx, a.k.Instances()).Result()
	if err != nil {
		return redisErr("read instances", err)
	}
	known := map[string]bool{}
	for _, n := range insts {
		known[n] = true
	}
	sort.Strings(names)
	rows := make([]exceptionRow, 0, len(names))
	for _, n := range names {
		rows = append(rows, exceptionRow{Name: n, Known: known[n]})
	}
	out := cmd.OutOrStdout()
	if a.json {
		return printJSON(out, map[string]any{"exceptions": rows})
	}
	table := make([][]string, 0, len(rows))
	for _, r := range rows {
		table = append(table, []string{r.Name, yesNo(r.Known)})
	}
	return printTable(out, []string{"INSTANCE", "KNOWN"}, table)
}

func (a *app) exceptionsAdd(cmd *cobra.Command, name string) error {
	if err := validID("instance name", name); err != nil {
		return err
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	added, err := a.rdb.SAdd(ctx, a.k.Exceptions(), name).Result()
	if err != nil {
		return redisErr("add exception "+name, err)
	}
	if added > 0 {
		if err := a.publish(ctx, "exceptions"); err != nil {
			return err
		}
	}
	if known, err := a.rdb.SIsMember(ctx, a.k.Instances(), name).Result(); err == nil && !known {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: no instance %q is registered now; the exception applies "+
			"when one with that name starts\n", name)
	}
	msg := "instance %s added to the exceptions: it keeps admitting while deserviced"
	if added == 0 {
		msg = "instance %s is already in the exceptions"
	}
	return a.done(cmd, map[string]any{"action": "add", "exception": name, "changed": added > 0}, msg, name)
}

func (a *app) exceptionsRemove(cmd *cobra.Command, name string) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	removed, err := a.rdb.SRem(ctx, a.k.Exceptions(), name).Result()
	if err != nil {
		return redisErr("remove exception "+name, err)
	}
	if removed == 0 {
		return fmt.Errorf("remove %q: %w", name, errNotException)
	}
	if err := a.publish(ctx, "exceptions"); err != nil {
		return err
	}
	return a.done(cmd, map[string]any{"action": "remove", "exception": name},
		"instance %s removed from the exceptions", name)
}
