package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// refuseUnknownSubcommands makes every command that only groups others
// (nodes, conf, profiles, ...) fail on a word it does not know: cobra's
// default prints the help and exits 0, so a typo in a script
// (`sipedgectl nodes lst`) looked like success. Alone, such a command still
// prints its help.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !cmd.HasSubCommands() || cmd.Run != nil || cmd.RunE != nil {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2
		}
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		var names []string
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				names = append(names, sub.Name())
			}
		}
		return fmt.Errorf("%s (commands: %s)", msg, strings.Join(names, ", "))
	}
}

// nameArguments gives every command with required positional arguments in
// its Use line ("show ID", "add NAME ADDR") an argument check that names
// what is missing ("missing ADDR") instead of cobra's "accepts 2 arg(s),
// received 1".
func nameArguments(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		nameArguments(sub)
	}
	if cmd.Args == nil || !cmd.Runnable() {
		return
	}
	if names := positionals(cmd.Use); len(names) > 0 {
		cmd.Args = exactArgs(names...)
	}
}

// positionals are the required argument names of a Use line: words after
// the command name that are neither in [ ] nor flags or their values.
func positionals(use string) []string {
	var names []string
	depth, skipValue := 0, false
	for _, w := range strings.Fields(use)[1:] {
		opens, closes := strings.Count(w, "["), strings.Count(w, "]")
		switch {
		case depth > 0 || opens > 0:
			depth += opens - closes
		case skipValue:
			skipValue = false
		case strings.HasPrefix(w, "-"):
			skipValue = !strings.Contains(w, "=")
		case strings.HasSuffix(w, "..."):
			return nil // variadic: its own check
		default:
			names = append(names, w)
		}
	}
	return names
}

// exactArgs is cobra.ExactArgs that names what is missing or extra.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return fmt.Errorf("%s: missing %s", cmd.CommandPath(), names[len(args)])
		case len(args) > len(names):
			return fmt.Errorf("%s: unexpected argument %q (takes %v)", cmd.CommandPath(), args[len(names)], names)
		}
		return nil
	}
}
