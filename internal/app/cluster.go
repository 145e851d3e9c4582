package app

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/internal/view"
	"github.com/sipedge/sipedge/ring"
)

// clusterDoc is /api/cluster, what the live page shows: the whole cluster
// as this instance reads it from Redis, with every instance's own view of
// the media nodes (probe health lives only in the instances).
type clusterDoc struct {
	RefreshedAt string            `json:"refreshed_at"` // RFC 3339, when this document was built
	From        string            `json:"from"`         // the instance that built it
	Instances   []clusterInstance `json:"instances"`
	Nodes       []clusterNode     `json:"nodes"`
	Invalid     map[string]string `json:"invalid_nodes"` // node -> why its hash is unusable
	Conferences []clusterConf     `json:"conferences"`
	Profiles    []clusterProfile  `json:"profiles"`
	Settings    []clusterSetting  `json:"settings"`
	Bad         []string          `json:"bad_values"` // other values in Redis sipedge ignores
	Errors      []string          `json:"errors"`     // parts that could not be read now
}

type clusterInstance struct {
	Name          string   `json:"name"`
	Site          string   `json:"site"`
	Server        string   `json:"server"`
	Addr          string   `json:"addr"`
	State         string   `json:"state"`
	Dialogs       int      `json:"dialogs"`
	Alive         bool     `json:"alive"`
	HeartbeatAge  int64    `json:"heartbeat_age_ms"`
	Deserviced    bool     `json:"deserviced"`
	HeldBack      bool     `json:"held_back"`
	Profiles      []string `json:"profiles,omitempty"`
	RejectsPerMin *float64 `json:"rejects_per_min"` // nil: no view published (stopped, or older)
	ErrorsPerMin  *float64 `json:"errors_per_min"`
}

type clusterNode struct {
	Name      string   `json:"name"`
	Addr      string   `json:"addr"`
	Site      string   `json:"site"`
	Server    string   `json:"server"`
	State     string   `json:"state"` // normal, draining, maintenance
	OutReason string   `json:"out_reason,omitempty"`
	Calls     int      `json:"calls"`
	Weight    float64  `json:"weight"`
	Effective float64  `json:"effective_weight"`
	Healthy   bool     `json:"healthy"` // on every instance that published a view
	InRing    bool     `json:"in_ring"` // on this instance
	Reason    string   `json:"reason,omitempty"`
	DownOn    []string `json:"down_on,omitempty"` // instances whose probes or heartbeat check fail it
}

type clusterConf struct {
	ID           string                 `json:"id"`
	Node         string                 `json:"node"`
	Instance     string                 `json:"instance"`
	Dialogs      int                    `json:"dialogs"`
	StartedMs    int64                  `json:"started_ms"`
	Participants []contract.Participant `json:"participants"`
}

type clusterProfile struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Status    string   `json:"status"`
	Servers   []string `json:"servers"`
	Deservice bool     `json:"deservice"`
}

type clusterSetting struct {
	Name   string `json:"name"`
	Value  string `json:"value"`  // in force
	Source string `json:"source"` // redis, or config (this instance's default)
	Stored string `json:"stored,omitempty"`
	Error  string `json:"error,omitempty"` // the stored value is bad: the value in force is the last good one
}

// maxConferences bounds the live page's read of the conferences.
const maxConferences = 200

// clusterSources is what /api/cluster reads.
type clusterSources struct {
	self      string
	rdb       redis.UniversalClient
	k         keys.Keys
	state     *contract.Watcher
	nodes     *ring.Watcher
	hbTimeout time.Duration
}

func (c clusterSources) doc(ctx context.Context, now time.Time) clusterDoc {
	d := clusterDoc{RefreshedAt: now.UTC().Format(time.RFC3339Nano), From: c.self, Invalid: map[string]string{},
		Instances: []clusterInstance{}, Nodes: []clusterNode{}, Conferences: []clusterConf{},
		Profiles: []clusterProfile{}, Settings: []clusterSetting{}, Bad: []string{}, Errors: []string{}}
	cs := c.state.Snapshot()
	if err := c.state.Err(); err != nil {
		d.Errors = append(d.Errors, "redis: "+err.Error()+" (showing the last state read)")
	}
	names := slices.Sorted(maps.Keys(cs.Instances))
	views, badViews, err := view.Load(ctx, c.rdb, c.k, names)
	if err != nil {
		d.Errors = append(d.Errors, err.Error())
	}
	for _, e := range badViews {
		d.Bad = append(d.Bad, e.Error())
	}
	for _, name := range names {
		in := cs.Instances[name]
		ci := clusterInstance{Name: name, Site: in.Site, Server: in.Server, Addr: in.Addr, State: in.State,
			Dialogs: in.Dialogs, Deserviced: in.Deserviced, HeldBack: in.HeldBack,
			Profiles: cs.DeservicedBy(name, in.Server)}
		if !in.Heartbeat.IsZero() {
			ci.HeartbeatAge = now.Sub(in.Heartbeat).Milliseconds()
			ci.Alive = now.Sub(in.Heartbeat) < c.hbTimeout
		}
		if v, ok := views[name]; ok {
			ci.RejectsPerMin, ci.ErrorsPerMin = &v.RejectsPerMin, &v.ErrorsPerMin
		}
		d.Instances = append(d.Instances, ci)
	}
	for name, e := range cs.NodeErrs {
		d.Invalid[name] = e.Error()
	}
	snap := c.nodes.Snapshot()
	for _, st := range snap.Statuses() {
		n := st.Node
		cn := clusterNode{Name: n.Name, Addr: n.Addr, Site: n.Site, Server: n.Server, State: st.State,
			OutReason: st.OutReason, Calls: st.Calls, Weight: n.Weight, Effective: st.EffectiveWeight,
			Healthy: st.Healthy, InRing: st.Eligible, Reason: st.Reason}
		for _, inst := range names {
			if vn, ok := views[inst].Node(n.Name); ok && !vn.Healthy {
				cn.DownOn = append(cn.DownOn, inst)
				cn.Healthy = false
				if cn.Reason == "" {
					cn.Reason = vn.Reason + " (on " + inst + ")"
				}
			}
		}
		d.Nodes = append(d.Nodes, cn)
	}
	for _, id := range slices.Sorted(maps.Keys(cs.Profiles)) {
		p := cs.Profiles[id]
		d.Profiles = append(d.Profiles, clusterProfile{ID: id, Name: p.Name, Status: p.Status, Servers: p.Servers, Deservice: p.Deservice})
	}
	d.Settings, d.Bad = c.settings(ctx, cs, d.Bad, &d.Errors)
	d.Conferences = c.conferences(ctx, &d.Errors)
	return d
}

// settings shows each field of sipedge:settings in force with where it
// comes from, and a stored value sipedge rejected with why.
func (c clusterSources) settings(ctx context.Context, cs *contract.Snapshot, bad []string, errs *[]string) ([]clusterSetting, []string) {
	stored, err := c.rdb.HGetAll(ctx, c.k.Settings()).Result()
	if err != nil {
		*errs = append(*errs, "read settings: "+err.Error())
	}
	rejected := map[string]string{}
	for _, e := range cs.Bad {
		if e.Key == c.k.Settings() {
			rejected[e.Field] = e.Reason
			continue
		}
		bad = append(bad, e.Error())
	}
	out := make([]clusterSetting, 0, len(contract.SettingFields))
	for _, f := range contract.SettingFields {
		s := clusterSetting{Name: f.Name, Value: f.Show(cs.Settings), Source: "config"}
		if v, ok := stored[f.Name]; ok {
			s.Stored, s.Source = v, "redis"
			if why, isBad := rejected[f.Name]; isBad {
				s.Error = why
			}
		}
		out = append(out, s)
	}
	return out, bad
}

// conferences reads the active conferences and their participants (at
// most maxConferences; the count says when there are more).
func (c clusterSources) conferences(ctx context.Context, errs *[]string) []clusterConf {
	var ids []string
	iter := c.rdb.Scan(ctx, 0, c.k.ConfPattern(), 100).Iterator()
	for iter.Next(ctx) && len(ids) < maxConferences {
		ids = append(ids, strings.TrimPrefix(iter.Val(), c.k.Conf("")))
	}
	if err := iter.Err(); err != nil {
		*errs = append(*errs, "scan conferences: "+err.Error())
	}
	slices.Sort(ids)
	confs := make([]*redis.MapStringStringCmd, len(ids))
	parts := make([]*redis.MapStringStringCmd, len(ids))
	if _, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			confs[i], parts[i] = p.HGetAll(ctx, c.k.Conf(id)), p.HGetAll(ctx, c.k.Participants(id))
		}
		return nil
	}); err != nil && len(ids) > 0 {
		*errs = append(*errs, "read conferences: "+err.Error())
		return []clusterConf{}
	}
	out := make([]clusterConf, 0, len(ids))
	for i, id := range ids {
		cf, _ := contract.ParseConf(c.k, id, confs[i].Val())
		cc := clusterConf{ID: id, Node: cf.Node, Instance: cf.Instance, Dialogs: cf.Dialogs, Participants: []contract.Participant{}}
		if !cf.Started.IsZero() {
			cc.StartedMs = cf.Started.UnixMilli()
		}
		for callID, raw := range parts[i].Val() {
			if p, bad := contract.ParseParticipant(c.k, id, callID, raw); bad == nil || !errors.Is(bad, contract.ErrBadJSON) {
				cc.Participants = append(cc.Participants, p)
			}
		}
		slices.SortFunc(cc.Participants, func(a, b contract.Participant) int { return strings.Compare(a.CallID, b.CallID) })
		out = append(out, cc)
	}
	return out
}

// viewOf is this instance's view of the nodes, published for sipedgectl
// and the other instances' live pages.
func viewOf(self string, nodes *ring.Watcher, state *contract.Watcher, g prometheus.Gatherer, rejects, errs *view.Window) func() view.Doc {
	return func() view.Doc {
		now := time.Now()
		invalid := map[string]string{}
		for name, e := range state.Snapshot().NodeErrs {
			invalid[name] = e.Error()
		}
		d := view.Of(self, nodes.Snapshot(), invalid, now)
		r, e := failureTotals(g)
		d.RejectsPerMin, d.ErrorsPerMin = rejects.Add(now, r), errs.Add(now, e)
		return d
	}
}

// failureTotals sums the counters of refused new dialogs (admission and
// flood limits) and of errors (malformed SIP, messages not sent, every
// Redis error counter). g is the registry of those counters alone
// (failureRegistry): the view reads it every second.
func failureTotals(g prometheus.Gatherer) (rejects, errors float64) {
	mfs, _ := g.Gather()
	for _, mf := range mfs {
		var into *float64
		switch failureKind(mf.GetName()) {
		case failureReject:
			into = &rejects
		case failureError:
			into = &errors
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			*into += m.GetCounter().GetValue()
		}
	}
	return rejects, errors
}
