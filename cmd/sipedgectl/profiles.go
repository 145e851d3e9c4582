package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
)

// errUnknownProfile is returned for a profile id that is not registered.
var errUnknownProfile = errors.New("unknown profile")

// Profile statuses (SPEC §2).
const (
	statusNormal    = contract.StatusNormal
	statusDeservice = contract.StatusDeservice
)

func newProfilesCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "profiles",
		Short: "Deservice profiles: take servers and instances out of service together",
		Long: "A deservice profile lists servers (media node servers or sipedge instance\n" +
			"servers) and instance names. While its status is deservice, the media nodes on\n" +
			"those servers take no new conferences and drain, and the instances answer 503\n" +
			"to new dialogs (while another instance of their site can take them).",
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List profiles: id, name, status, servers, description",
		Args:  cobra.NoArgs,
		RunE:  a.profilesList,
	}
	create := &cobra.Command{
		Use:   "create ID --name NAME --servers a,b [--description TEXT]",
		Short: "Create a profile in status normal",
		Args:  cobra.ExactArgs(1),
	}
	name := create.Flags().String("name", "", "human name of the profile (required)")
	servers := create.Flags().String("servers", "", "comma-separated server or instance names (required)")
	desc := create.Flags().String("description", "", "free text")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("servers")
	create.RunE = func(cmd *cobra.Command, args []string) error {
		return a.profilesCreate(cmd, args[0], *name, *servers, *desc)
	}
	deservice := &cobra.Command{
		Use:   "deservice ID",
		Short: "Set a profile's status to deservice: its servers and instances drain",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.profileSetStatus(cmd, args[0], statusDeservice)
		},
	}
	restore := &cobra.Command{
		Use:   "restore ID",
		Short: "Set a profile's status back to normal",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.profileSetStatus(cmd, args[0], statusNormal)
		},
	}
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a profile (SREM + DEL); a deservice profile stops applying",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.profilesDelete(cmd, args[0]) },
	}
	cmd.AddCommand(list, create, deservice, restore, del)
	return cmd
}

// profileRow is one profile as `profiles list` shows it.
type profileRow struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Status      string            `json:"status"`    // as stored
	Deservice   bool              `json:"deservice"` // in force: an unknown status counts as normal
	Servers     []string          `json:"servers"`
	Description string            `json:"description"`
	Valid       bool              `json:"valid"`
	Error       string            `json:"error,omitempty"`
	Fields      map[string]string `json:"fields"`
}

// loadProfiles reads every profile in the profiles set, sorted by id, the
// way instances read them: a member without a hash applies nothing, an
// unknown status counts as normal (an instance keeps the last good status;
// this CLI has no history).
func (a *app) loadProfiles(ctx context.Context) ([]profileRow, error) {
	ids, err := a.rdb.SMembers(ctx, a.k.Profiles()).Result()
	if err != nil {
		return nil, redisErr("read profiles", err)
	}
	sort.Strings(ids)
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	if len(ids) > 0 {
		if _, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HGetAll(ctx, a.k.Profile(id))
			}
			return nil
		}); err != nil {
			return nil, redisErr("read profile hashes", err)
		}
	}
	rows := make([]profileRow, 0, len(ids))
	for i, id := range ids {
		rows = append(rows, parseProfile(a.k, id, cmds[i].Val()))
	}
	return rows, nil
}

func parseProfile(k keys.Keys, id string, f map[string]string) profileRow {
	p, fe := contract.ParseProfile(k, id, f, contract.Profile{}) // no history: a bad status counts as normal
	r := profileRow{ID: id, Name: p.Name, Description: p.Description, Status: p.Status,
		Servers: p.Servers, Fields: f, Valid: true, Deservice: p.Deservice}
	switch {
	case len(f) == 0:
		r.Valid, r.Error = false, "listed in the profiles set but its hash does not exist: applies nothing"
	case fe != nil:
		r.Valid = false
		r.Error = fmt.Sprintf("unknown status %q (want normal or deservice): instances keep the last good status", r.Status)
	}
	return r
}

// splitList splits a comma-separated field, dropping blanks.
func splitList(s string) []string { return contract.SplitList(s) }

// deservicedBy maps every server or instance name listed in a deservice
// profile to the ids of those profiles, sorted.
func deservicedBy(profiles []profileRow) map[string][]string {
	out := map[string][]string{}
	for _, p := range profiles { // sorted by id
		if !p.Deservice {
			continue
		}
		for _, s := range p.Servers {
			if !slices.Contains(out[s], p.ID) {
				out[s] = append(out[s], p.ID)
			}
		}
	}
	return out
}

func (a *app) profilesList(cmd *cobra.Command, _ []string) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	rows, err := a.loadProfiles(ctx)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if a.json {
		return printJSON(out, map[string]any{"profiles": rows})
	}
	table := make([][]string, 0, len(rows))
	var notes []string
	for _, r := range rows {
		status := r.Status
		if !r.Valid {
			status = "invalid: " + orDash(r.Status)
			notes = append(notes, fmt.Sprintf("profile %s: %s", r.ID, r.Error))
		}
		table = append(table, []string{r.ID, r.Name, status, strings.Join(r.Servers, ","), r.Description})
	}
	if err := printTable(out, []string{"ID", "NAME", "STATUS", "SERVERS", "DESCRIPTION"}, table); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(out, "warning: "+n)
	}
	return nil
}

func (a *app) profilesCreate(cmd *cobra.Command, id, name, servers, desc string) error {
	if err := validID("profile id", id); err != nil {
		return err
	}
	if strings.TrimSpace(name) == "" {
		return errors.New("bad --name: must not be empty")
	}
	list, err := parseServers(servers)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	if exists, err := a.profileExists(ctx, id); err != nil {
		return err
	} else if exists {
		return fmt.Errorf("profile %q already exists: delete it first", id)
	}
	// The hash is complete before the id joins the set, so no reader sees
	// a member without its fields.
	if err := a.rdb.HSet(ctx, a.k.Profile(id), contract.ProfileFields(contract.Profile{
		Name: name, Description: desc, Servers: list})...).Err(); err != nil {
		return redisErr("write profile "+id, err)
	}
	if err := a.rdb.SAdd(ctx, a.k.Profiles(), id).Err(); err != nil {
		return redisErr("add profile "+id, err)
	}
	if err := a.publish(ctx, "profile:"+id); err != nil {
		return err
	}
	if unknown := a.readServers(ctx).unknown(list); len(unknown) > 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s match no media node server, instance name or instance server "+
			"known now\n", strings.Join(unknown, ", "))
	}
	return a.done(cmd, map[string]any{"action": "create", "profile": id, "name": name, "servers": list,
		"description": desc, "status": statusNormal},
		"profile %s created (status normal, servers %s)", id, strings.Join(list, ","))
}

func (a *app) profileSetStatus(cmd *cobra.Command, id, status string) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	f, err := a.existingProfile(ctx, id)
	if err != nil {
		return err
	}
	old := f["status"]
	if err := a.rdb.HSet(ctx, a.k.Profile(id), "status", status).Err(); err != nil {
		return redisErr("set status of profile "+id, err)
	}
	if err := a.publish(ctx, "profile:"+id); err != nil {
		return err
	}
	servers := splitList(f["servers"])
	affected := a.readServers(ctx).affectedBy(servers)
	verb := "deserviced"
	if status == statusNormal {
		verb = "restored"
	}
	if a.json {
		return a.done(cmd, map[string]any{"action": status, "profile": id, "status": status, "previous": old,
			"servers": servers, "nodes": affected.nodes, "instances": affected.instances}, "")
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "profile %s %s (status %s, was %s)\n", id, verb, status, orDash(old))
	if len(affected.nodes) > 0 {
		fmt.Fprintf(out, "  media nodes: %s\n", strings.Join(affected.nodes, ", "))
	}
	if len(affected.instances) > 0 {
		fmt.Fprintf(out, "  instances:   %s\n", strings.Join(affected.instances, ", "))
	}
	if status == statusDeservice {
		fmt.Fprintln(out, "  follow the drain with: sipedgectl status, or sipedgectl drain --wait NODE|INSTANCE")
	}
	return nil
}

func (a *app) profilesDelete(cmd *cobra.Command, id string) error {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	f, err := a.existingProfile(ctx, id)
	if err != nil {
		return err
	}
	// Out of the set first: readers never see a member without its hash.
	if err := a.rdb.SRem(ctx, a.k.Profiles(), id).Err(); err != nil {
		return redisErr("remove profile "+id, err)
	}
	if err := a.rdb.Del(ctx, a.k.Profile(id)).Err(); err != nil {
		return redisErr("delete profile "+id, err)
	}
	if err := a.publish(ctx, "profile:"+id); err != nil {
		return err
	}
	note := ""
	if f["status"] == statusDeservice {
		note = "; it was in status deservice, so its servers return to service"
	}
	return a.done(cmd, map[string]any{"action": "delete", "profile": id, "previous_status": f["status"]},
		"profile %s deleted%s", id, note)
}

// existingProfile returns the hash of a profile that is in the set and has
// a hash; anything else is errUnknownProfile, and nothing is written.
func (a *app) existingProfile(ctx context.Context, id string) (map[string]string, error) {
	member, err := a.rdb.SIsMember(ctx, a.k.Profiles(), id).Result()
	if err != nil {
		return nil, redisErr("read profiles", err)
	}
	f, err := a.rdb.HGetAll(ctx, a.k.Profile(id)).Result()
	if err != nil {
		return nil, redisErr("read profile "+id, err)
	}
	switch {
	case !member && len(f) == 0:
		return nil, fmt.Errorf("profile %q: %w", id, errUnknownProfile)
	case !member:
		return nil, fmt.Errorf("profile %q has a hash but is not in %s: %w (add it with SADD, or DEL the hash)",
			id, a.k.Profiles(), errUnknownProfile)
	case len(f) == 0:
		return nil, fmt.Errorf("profile %q is in %s but has no hash: %w (delete it and create it again)",
			id, a.k.Profiles(), errUnknownProfile)
	}
	return f, nil
}

// profileExists reports whether id is in the profiles set or has a hash.
func (a *app) profileExists(ctx context.Context, id string) (bool, error) {
	member, err := a.rdb.SIsMember(ctx, a.k.Profiles(), id).Result()
	if err != nil {
		return false, redisErr("read profiles", err)
	}
	if member {
		return true, nil
	}
	n, err := a.rdb.Exists(ctx, a.k.Profile(id)).Result()
	if err != nil {
		return false, redisErr("read profile "+id, err)
	}
	return n > 0, nil
}

// parseServers validates --servers: a non-empty comma-separated list of
// names without blanks, spaces or duplicates.
func parseServers(s string) ([]string, error) {
	var out []string
	for _, v := range strings.Split(s, ",") {
		v = strings.TrimSpace(v)
		switch {
		case v == "":
			return nil, fmt.Errorf("bad --servers %q: want comma-separated names without empty entries", s)
		case strings.ContainsAny(v, " \t\r\n"):
			return nil, fmt.Errorf("bad --servers %q: %q contains a space", s, v)
		case slices.Contains(out, v):
			return nil, fmt.Errorf("bad --servers %q: %q is listed twice", s, v)
		}
		out = append(out, v)
	}
	return out, nil
}

// validID rejects ids that would make odd keys or SCAN patterns.
func validID(what, id string) error {
	if id == "" || strings.ContainsAny(id, " \t\r\n*?[],:") {
		return fmt.Errorf("bad %s %q: must be non-empty, without spaces or *?[],:", what, id)
	}
	return nil
}

// affected lists what a profile's servers match now.
type affected struct {
	nodes, instances []string
}

// serverIndex is the server of every registered media node and instance.
type serverIndex struct {
	nodes, instances map[string]string // name -> server
}

// readServers reads the server of every node and instance. It is
// informational: on a Redis error it returns what it has.
func (a *app) readServers(ctx context.Context) serverIndex {
	idx := serverIndex{nodes: map[string]string{}, instances: map[string]string{}}
	read := func(set string, key func(string) string, into map[string]string) {
		names, err := a.rdb.SMembers(ctx, set).Result()
		if err != nil {
			return
		}
		cmds := make([]*redis.StringCmd, len(names))
		_, _ = a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, n := range names {
				cmds[i] = p.HGet(ctx, key(n), "server")
			}
			return nil
		})
		for i, n := range names {
			into[n] = cmds[i].Val()
		}
	}
	read(a.k.Nodes(), a.k.Node, idx.nodes)
	read(a.k.Instances(), a.k.Instance, idx.instances)
	return idx
}

// affectedBy returns the media nodes whose server, and the instances whose
// name or server, is in servers, sorted.
func (idx serverIndex) affectedBy(servers []string) affected {
	res := affected{nodes: []string{}, instances: []string{}}
	in := func(s string) bool { return s != "" && slices.Contains(servers, s) }
	for n, srv := range idx.nodes {
		if in(srv) {
			res.nodes = append(res.nodes, n)
		}
	}
	for n, srv := range idx.instances {
		if in(n) || in(srv) {
			res.instances = append(res.instances, n)
		}
	}
	sort.Strings(res.nodes)
	sort.Strings(res.instances)
	return res
}

// unknown returns the entries of servers that name no node server,
// instance name or instance server.
func (idx serverIndex) unknown(servers []string) []string {
	known := map[string]bool{}
	for _, srv := range idx.nodes {
		known[srv] = true
	}
	for n, srv := range idx.instances {
		known[n], known[srv] = true, true
	}
	var out []string
	for _, s := range servers {
		if !known[s] {
			out = append(out, s)
		}
	}
	return out
}
