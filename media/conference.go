package media

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/media/policy"
)

// record is a participant as sipedge:participants:<conf> holds it (one
// JSON value per Call-ID), read by every instance and by sipedgectl.
type record = contract.Participant

// Fields of sipedge:conf:<id> written here.
const (
	fieldNoHostSince  = "no_host_since"
	fieldOneLeftSince = "one_left_since"
	fieldEnded        = "ended"   // the rule (or "operator") that ended it
	fieldCounted      = "counted" // the instance that logged and counted the end
)

// recordTTL bounds how long a participants hash (and its counters) outlives
// lost BYEs.
const recordTTL = 24 * time.Hour

// setIfExists sets a hash field only when it is not set yet and the hash
// still exists: a conference whose last dialog ended is never recreated.
var setIfExists = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
end
return -1`)

// confTracker remembers when each local conference must be evaluated again.
type confTracker struct {
	mu        sync.Mutex
	deadlines map[string]time.Time
	badRaw    map[string]string // last confcfg with bad values, per conference
}

func (s *session) record(instance string, now time.Time) record {
	st := s.endpointStats()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := record{CallID: s.callID, Instance: instance, From: s.part.AOR, Role: string(s.part.Role),
		Kind: string(s.part.Kind), KeepAlive: string(s.part.KeepAlive), Media: s.hasMedia, Present: s.present,
		JoinedMs: s.joinedAt.UnixMilli(), UpdatedMs: now.UnixMilli(), Packets: st.Packets, Bytes: st.Bytes, Lost: st.Lost}
	if !st.LastPacket.IsZero() {
		r.LastRTPMs = st.LastPacket.UnixMilli()
	}
	return r
}

// resolveRoles gives a role to every session in ops that joined without
// one (no X-Sipedge-Role): the AOR on its conference's hosts list joins as
// Host, anyone else as Guest, and no list makes everyone a Host. The
// lists of all those conferences are read in one pipeline. A Redis fault
// makes them Hosts: it must not end conferences.
func (mg *Manager) resolveRoles(ctx context.Context, ops []writeOp) {
	var pending []writeOp
	for _, op := range ops {
		if op.kind != opWrite {
			continue
		}
		op.s.mu.Lock()
		if op.s.part.Role == "" {
			pending = append(pending, op)
		}
		op.s.mu.Unlock()
	}
	if len(pending) == 0 {
		return // most flushes: no pipeline, no map
	}
	lists := map[string]*redis.StringCmd{}
	p := mg.opts.Redis.Pipeline()
	for _, op := range pending {
		if lists[op.conf] == nil {
			lists[op.conf] = p.HGet(ctx, mg.opts.Keys.ConfCfg(op.conf), "hosts")
		}
	}
	if _, err := p.Exec(ctx); err != nil && err != redis.Nil {
		mg.redisError("read hosts", err)
	}
	for _, op := range pending {
		s := op.s
		s.mu.Lock()
		if s.part.Role != "" { // resolved by a flush before this one
			s.mu.Unlock()
			continue
		}
		hosts, err := lists[op.conf].Result()
		switch {
		case err != nil && err != redis.Nil, strings.TrimSpace(hosts) == "", inHosts(hosts, s.part.AOR):
			s.part.Role = policy.RoleHost
		default:
			s.part.Role = policy.RoleGuest
		}
		s.mu.Unlock()
		mg.logJoined(s)
	}
}

// inHosts compares AORs case-insensitively, with or without a sip: scheme.
func inHosts(list, aor string) bool {
	norm := func(s string) string {
		s = strings.ToLower(strings.TrimSpace(s))
		s = strings.TrimPrefix(s, "sips:")
		return strings.TrimPrefix(s, "sip:")
	}
	want := norm(aor)
	for _, h := range strings.Split(list, ",") {
		if norm(h) == want && want != "" {
			return true
		}
	}
	return false
}

// evaluate runs the rules of one conference on its counters in Redis and
// acts on the verdict: three reads in one round trip whatever the
// conference's size (plus, at most once a second, the heartbeats of the
// other instances holding participants).
func (mg *Manager) evaluate(ctx context.Context, conf string, now time.Time) {
	mg.evaluateAll(ctx, []string{conf}, now)
}

// evalBatch is how many conferences' reads share one round trip.
const evalBatch = 256

// confReads is what an evaluation reads of one conference.
type confReads struct {
	counts, cfg *redis.MapStringStringCmd
	state       *redis.SliceCmd
}

func (r confReads) err() error {
	for _, err := range []error{r.counts.Err(), r.state.Err(), r.cfg.Err()} {
		if err != nil {
			return err
		}
	}
	return nil
}

// evaluateAll evaluates confs, the reads of up to evalBatch of them in
// one pipeline: a pass over every local conference costs a round trip
// per evalBatch conferences, not one per conference, so the loop's time
// per conference stays flat however many it carries.
func (mg *Manager) evaluateAll(ctx context.Context, confs []string, now time.Time) {
	k := mg.opts.Keys
	reads := make([]confReads, min(len(confs), evalBatch))
	for len(confs) > 0 {
		chunk := confs[:min(len(confs), evalBatch)]
		confs = confs[len(chunk):]
		reads = reads[:len(chunk)]
		mg.opts.Pool.Poll()
		_, _ = mg.opts.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, conf := range chunk {
				reads[i] = confReads{
					counts: p.HGetAll(ctx, k.ParticipantCounts(conf)),
					state:  p.HMGet(ctx, k.Conf(conf), fieldNoHostSince, fieldOneLeftSince, fieldEnded),
					cfg:    p.HGetAll(ctx, k.ConfCfg(conf)),
				}
			}
			return nil
		})
		for i, conf := range chunk {
			mg.pollRelay(i)
			if err := reads[i].err(); err != nil {
				mg.redisError("read conference", err)
				continue
			}
			mg.decide(ctx, conf, reads[i], now)
		}
	}
}

// decide runs the rules on what was read of conf and acts on the verdict.
func (mg *Manager) decide(ctx context.Context, conf string, r confReads, now time.Time) {
	k := mg.opts.Keys
	state := r.state.Val()
	if rule := str(state[2]); rule != "" {
		mg.endLocal(ctx, conf, rule)
		return
	}
	total := mg.liveCounts(ctx, parseCounts(r.counts.Val()), now)
	if total[cntAll] <= 0 {
		mg.confs.setDeadline(conf, time.Time{})
		return
	}
	prev := policy.Timers{NoHostSince: msTime(str(state[0])), OneLeftSince: msTime(str(state[1]))}
	v := policy.Step(prev, snapshotOf(total), mg.confSettings(conf, r.cfg.Val()), now)
	mg.storeTimers(ctx, conf, prev, v.Next)
	if !v.End {
		mg.confs.setDeadline(conf, v.Deadline)
		return
	}
	if _, err := setIfExists.Run(ctx, mg.opts.Redis, []string{k.Conf(conf)}, fieldEnded, string(v.Rule)).Result(); err != nil {
		mg.redisError("mark conference ended", err)
		return
	}
	mg.endLocal(ctx, conf, string(v.Rule))
}

// liveCounts sums the counters of the instance runs that are alive: this
// one, and those whose heartbeat is fresh and whose hash names that run. A
// dead instance's participants died with it and count for nothing.
func (mg *Manager) liveCounts(ctx context.Context, byOwner map[string]counts, now time.Time) counts {
	var unknown []string
	for owner := range byOwner {
		if owner == mg.owner() {
			continue
		}
		if inst, _ := splitOwner(owner); inst == mg.opts.Instance {
			continue // an earlier run of this instance: dead
		}
		if _, ok := mg.live.get(owner, now); !ok {
			unknown = append(unknown, owner)
		}
	}
	if len(unknown) > 0 {
		cmds := make([]*redis.SliceCmd, len(unknown))
		_, err := mg.opts.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, owner := range unknown {
				inst, _ := splitOwner(owner)
				cmds[i] = p.HMGet(ctx, mg.opts.Keys.Instance(inst), "heartbeat", fieldMediaBoot)
			}
			return nil
		})
		if err != nil {
			mg.redisError("read instance heartbeats", err)
		}
		for i, owner := range unknown {
			v := cmds[i].Val()
			if len(v) != 2 {
				continue // unread: neither alive nor remembered
			}
			_, boot := splitOwner(owner)
			mg.live.set(owner, instanceAlive(str(v[0]), str(v[1]), boot, now, mg.opts.HeartbeatTimeout), now)
		}
	}
	var total counts
	for owner, c := range byOwner {
		alive := owner == mg.owner()
		if !alive {
			if inst, _ := splitOwner(owner); inst != mg.opts.Instance {
				alive, _ = mg.live.get(owner, now)
			}
		}
		if !alive {
			continue
		}
		for i := range total {
			total[i] += c[i]
		}
	}
	return total
}

// endLocal ends this instance's legs of an ended conference; the first
// instance to get here logs and counts the end.
func (mg *Manager) endLocal(ctx context.Context, conf, rule string) {
	won, err := setIfExists.Run(ctx, mg.opts.Redis, []string{mg.opts.Keys.Conf(conf)}, fieldCounted, mg.opts.Instance).Int()
	if err == nil && won == 1 {
		mg.m.ended.WithLabelValues(rule).Inc()
		mg.log.Info().Str("conf_id", conf).Str("rule", rule).Msg("conference ended")
		if err := mg.opts.Redis.Publish(ctx, mg.opts.Keys.Events(), keys.ConfEnd(conf)).Err(); err != nil {
			mg.redisError("publish conference end", err)
		}
	}
	mg.confs.forget(conf)
	if mg.ender == nil {
		return
	}
	n := mg.ender.EndCalls(ctx, func(_, c string) bool { return c == conf }, rule)
	if n > 0 {
		mg.log.Info().Str("conf_id", conf).Str("rule", rule).Int("calls", n).Msg("conference legs ended here")
	}
}

// confSettings applies sipedge:confcfg:<id> over the global settings.
func (mg *Manager) confSettings(conf string, cfg map[string]string) policy.Settings {
	c, errs := contract.ParseConfCfg(mg.opts.Keys, conf, toContract(mg.settings.get()), cfg)
	s := fromContract(c).Policy
	if len(errs) == 0 {
		return s
	}
	raw := ""
	for _, e := range errs {
		raw += e.Field + "=" + e.Value + ";"
	}
	mg.confs.mu.Lock()
	if mg.confs.badRaw == nil {
		mg.confs.badRaw = map[string]string{}
	}
	seen := mg.confs.badRaw[conf] == raw
	mg.confs.badRaw[conf] = raw
	mg.confs.mu.Unlock()
	if !seen {
		for _, e := range errs {
			mg.m.badValues.Inc()
			mg.log.Error().Str("key", e.Key).Str("field", e.Field).Str("value", e.Value).
				Str("reason", e.Reason).Msg("bad conference setting ignored")
		}
	}
	return s
}

// storeTimers writes the rules' timers: a new start only if none is set
// (the earliest instance wins), a stop as a delete.
func (mg *Manager) storeTimers(ctx context.Context, conf string, prev, next policy.Timers) {
	key := mg.opts.Keys.Conf(conf)
	for _, f := range []struct {
		field      string
		prev, next time.Time
	}{
		{fieldNoHostSince, prev.NoHostSince, next.NoHostSince},
		{fieldOneLeftSince, prev.OneLeftSince, next.OneLeftSince},
	} {
		switch {
		case f.next.IsZero() && !f.prev.IsZero():
			if err := mg.opts.Redis.HDel(ctx, key, f.field).Err(); err != nil {
				mg.redisError("clear conference timer", err)
			}
		case !f.next.IsZero() && f.prev.IsZero():
			ms := strconv.FormatInt(f.next.UnixMilli(), 10)
			if err := setIfExists.Run(ctx, mg.opts.Redis, []string{key}, f.field, ms).Err(); err != nil {
				mg.redisError("start conference timer", err)
			}
		}
	}
}

// forget drops what is kept about an ended conference.
func (c *confTracker) forget(conf string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.deadlines, conf)
	delete(c.badRaw, conf)
}

func (c *confTracker) setDeadline(conf string, d time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d.IsZero() {
		delete(c.deadlines, conf)
		return
	}
	c.deadlines[conf] = d
}

// due lists conferences whose deadline has passed.
func (c *confTracker) due(now time.Time) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for conf, d := range c.deadlines {
		if !now.Before(d) {
			out = append(out, conf)
		}
	}
	return out
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func msTime(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(n)
}
