package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
)

// errConfNotActive is returned when dialing into a conference that has no
// node (not active) or is being ended.
var errConfNotActive = errors.New("conference is not active")

func newConfEndCommand(a *app) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "end ID",
		Short: "End a conference now: every sipedge instance sends BYE on all its legs",
		Long: "Sets ended=operator in the conference hash (and end_reason with --reason) and\n" +
			"announces \"conf-end ID\" on the events channel; every sipedge instance then hangs up\n" +
			"the legs it carries. Fails for a conference that is not active.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return a.confEnd(cmd, args[0], reason) },
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded as end_reason in the conference hash")
	return cmd
}

// endConfScript sets the ended field only on an existing conference hash,
// so a conference that just ended is not recreated as a stub. It returns the
// previous ended value, or nil when the conference does not exist.
var endConfScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local prev = redis.call('HGET', KEYS[1], 'ended') or ''
redis.call('HSET', KEYS[1], 'ended', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'end_reason', ARGV[2]) end
return prev
`)

func (a *app) confEnd(cmd *cobra.Command, id, reason string) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	key := a.k.Conf(id)
	prev, err := endConfScript.Run(ctx, a.rdb, []string{key}, "operator", reason).Text()
	switch {
	case errors.Is(err, redis.Nil):
		return fmt.Errorf("conf end %q: %w (no %s)", id, errUnknownConf, key)
	case err != nil:
		return redisErr("end conference "+id, err)
	}
	msg := keys.ConfEnd(id)
	if err := a.publish(ctx, msg); err != nil {
		return fmt.Errorf("ended=operator is set on %s, but the announcement failed "+
			"(instances act at their next reload): %w", key, err)
	}
	was := ""
	if prev != "" {
		was = fmt.Sprintf(" (was already ended: %s)", prev)
	}
	return a.done(cmd, map[string]any{"action": "conf-end", "conference": id, "ended": "operator",
		"reason": reason, "previous": prev, "key": key, "published": msg},
		"conference %s ended by operator%s: set ended=operator on %s, published %q on %s;\n"+
			"every sipedge instance now sends BYE on the legs it carries",
		id, was, key, msg, a.k.Events())
}

// dialEntry is one dial request as confnode reads it from <prefix>dial:<node>.
// Empty role or keep_alive: confnode sends no header for it.
type dialEntry = contract.Dial

func newConfDialCommand(a *app) *cobra.Command {
	var e dialEntry
	cmd := &cobra.Command{
		Use:   "dial CONF URI",
		Short: "Have the conference's node call URI into it through sipedge (admin or ADP participant)",
		Long: "Queues a dial request for the media node hosting CONF (LPUSH on <prefix>dial:<node>).\n" +
			"The node places the call through sipedge with X-Sipedge-Participant, -Role and\n" +
			"-Keep-Alive headers. Without --role or --keep-alive sipedge applies its defaults\n" +
			"(role from the conference's hosts list; keep-alive yes for admin, if-multiple for adp).",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e.Conf, e.URI = args[0], args[1]
			return a.confDial(cmd, e)
		},
	}
	f := cmd.Flags()
	f.StringVar(&e.Role, "role", "", "participant role: host or guest")
	f.StringVar(&e.KeepAlive, "keep-alive", "", "whether it keeps the conference alive: yes, no or if-multiple")
	f.StringVar(&e.Kind, "kind", "admin", "participant kind: admin or adp")
	return cmd
}

// validate checks the flags and the URI, naming what is wrong.
func validateDial(e dialEntry) error {
	// The queue's reader (confnode) checks entries with the same rules.
	if bad := contract.CheckDial(e); bad != nil && bad.Field != "conf" && bad.Field != "uri" {
		return fmt.Errorf("--%s: %s", strings.ReplaceAll(bad.Field, "_", "-"), bad.Reason)
	}
	var u sip.Uri
	if err := sip.ParseUri(e.URI, &u); err != nil || (u.Scheme != "sip" && u.Scheme != "sips") || u.Host == "" {
		return fmt.Errorf("URI %q: want sip:user@host[:port]", e.URI)
	}
	return nil
}

func (a *app) confDial(cmd *cobra.Command, e dialEntry) error {
	if err := validateDial(e); err != nil {
		return err
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	confKey := a.k.Conf(e.Conf)
	f, err := a.rdb.HMGet(ctx, confKey, "node", "ended").Result()
	if err != nil {
		return redisErr("read "+confKey, err)
	}
	node, _ := f[0].(string)
	ended, _ := f[1].(string)
	switch {
	case node == "":
		return fmt.Errorf("conf dial %q: %w (no node in %s)", e.Conf, errConfNotActive, confKey)
	case ended != "":
		return fmt.Errorf("conf dial %q: %w (it is ending: ended=%s)", e.Conf, errConfNotActive, ended)
	}
	var id [8]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	e.ID = hex.EncodeToString(id[:])
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	queue := a.k.Dial(node)
	if err := a.rdb.LPush(ctx, queue, b).Err(); err != nil {
		return redisErr("queue dial request on "+queue, err)
	}
	if a.json {
		return printJSON(cmd.OutOrStdout(), e)
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "dial request %s queued for node %s (%s): %s\n",
		e.ID, node, queue, string(b))
	return err
}
