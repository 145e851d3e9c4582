package contract

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sipedge/sipedge/internal/keys"
)

// Profile statuses (SPEC §2).
const (
	StatusNormal    = "normal"
	StatusDeservice = "deservice"
)

// Profile hash fields.
const (
	ProfileName        = "name"
	ProfileDescription = "description"
	ProfileServers     = "servers"
	ProfileStatus      = "status"
)

// Profile is one deservice profile (sipedge:profile:<id>).
type Profile struct {
	ID, Name, Description string
	Servers               []string // server or instance names
	Status                string   // as stored
	Deservice             bool     // in force: status = deservice (a bad status keeps the last good one)
}

// ParseProfile reads a profile hash; a bad status keeps last's verdict
// (normal for a profile never seen) and is reported.
func ParseProfile(k keys.Keys, id string, fields map[string]string, last Profile) (Profile, *FieldError) {
	p := Profile{ID: id, Name: fields[ProfileName], Description: fields[ProfileDescription],
		Servers: SplitList(fields[ProfileServers]), Status: fields[ProfileStatus]}
	switch st := strings.TrimSpace(p.Status); st {
	case StatusDeservice:
		p.Deservice = true
	case StatusNormal, "":
	default:
		p.Deservice = last.Deservice
		return p, bad(k.Profile(id), ProfileStatus, p.Status, ErrUnknown, "%q is not normal or deservice", st)
	}
	return p, nil
}

// ProfileFields are the hash fields sipedgectl writes for a new profile.
func ProfileFields(p Profile) []any {
	return []any{ProfileName, p.Name, ProfileServers, strings.Join(p.Servers, ","),
		ProfileDescription, p.Description, ProfileStatus, StatusNormal}
}

// SplitList splits a comma-separated field, dropping blanks; never nil.
func SplitList(s string) []string {
	out := []string{}
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Instance hash fields.
const (
	InstanceSite       = "site"
	InstanceServer     = "server"
	InstanceAddr       = "addr"
	InstanceState      = "state"
	InstanceDialogs    = "dialogs"
	InstanceDeserviced = "deserviced"
	InstanceHeldBack   = "held_back"
	InstanceHeartbeat  = "heartbeat"
)

// Instance is what a sipedge instance publishes about itself
// (sipedge:instance:<name>).
type Instance struct {
	Name, Site, Server, Addr string
	Heartbeat                time.Time
	State                    string // as published: normal, draining, drained ("" if never)
	Dialogs                  int
	Deserviced, HeldBack     bool
}

// ParseInstance reads an instance hash. Only the heartbeat is judged (the
// 503 rule reads it); a bad one is reported and left zero (not alive).
func ParseInstance(k keys.Keys, name string, fields map[string]string) (Instance, *FieldError) {
	in := Instance{Name: name, Site: fields[InstanceSite], Server: fields[InstanceServer], Addr: fields[InstanceAddr],
		State: fields[InstanceState], Deserviced: fields[InstanceDeserviced] == "1", HeldBack: fields[InstanceHeldBack] == "1"}
	in.Dialogs, _ = strconv.Atoi(fields[InstanceDialogs])
	if hb := strings.TrimSpace(fields[InstanceHeartbeat]); hb != "" {
		t, ok := ParseUnixMilli(hb)
		if !ok {
			return in, bad(k.Instance(name), InstanceHeartbeat, hb, ErrNotUnixMs, "%q is not unix milliseconds", hb)
		}
		in.Heartbeat = t
	}
	return in, nil
}

// InstanceFields are the hash fields an instance writes at each heartbeat.
func InstanceFields(in Instance) []any {
	return []any{InstanceSite, in.Site, InstanceServer, in.Server, InstanceAddr, in.Addr,
		InstanceState, in.State, InstanceDialogs, strconv.Itoa(in.Dialogs),
		InstanceDeserviced, FormatFlag(in.Deserviced), InstanceHeldBack, FormatFlag(in.HeldBack),
		InstanceHeartbeat, FormatUnixMilli(in.Heartbeat)}
}

// Conference placement fields of sipedge:conf:<id> (the admission Ledger
// writes them; the media rules add their timers and verdicts).
const (
	ConfNode     = "node"     // the media node the conference is placed on
	ConfStarted  = "started"  // unix ms of the first dialog
	ConfDialogs  = "dialogs"  // active dialogs (sum of the instances' shares)
	ConfInstance = "instance" // the instance that placed it
)

// Conf is the placement part of a sipedge:conf:<id> hash.
type Conf struct {
	ID, Node, Instance string
	Started            time.Time
	Dialogs            int
	Fields             map[string]string // every field as stored (live state of later features)
}

// ParseConf reads a conference hash. A conference without a node is not
// placed (ErrMissing); bad started/dialogs values are reported and left zero.
func ParseConf(k keys.Keys, id string, fields map[string]string) (Conf, []*FieldError) {
	key := k.Conf(id)
	c := Conf{ID: id, Node: strings.TrimSpace(fields[ConfNode]), Instance: fields[ConfInstance], Fields: fields}
	var errs []*FieldError
	if len(fields) == 0 {
		return c, []*FieldError{{Key: key, Err: ErrNoHash, Reason: key + " does not exist"}}
	}
	if c.Node == "" {
		errs = append(errs, bad(key, ConfNode, fields[ConfNode], ErrMissing, "missing"))
	}
	if v := fields[ConfStarted]; v != "" {
		if t, ok := ParseUnixMilli(v); ok {
			c.Started = t
		} else {
			errs = append(errs, bad(key, ConfStarted, v, ErrNotUnixMs, "%q is not unix milliseconds", v))
		}
	}
	if v := fields[ConfDialogs]; v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			c.Dialogs = n
		} else {
			errs = append(errs, bad(key, ConfDialogs, v, ErrNotNumber, "%q is not a dialog count", v))
		}
	}
	return c, errs
}

// DeservicedBy returns the ids of deservice profiles listing name or
// server, sorted; empty when none does.
func (s *Snapshot) DeservicedBy(name, server string) []string {
	var ids []string
	for id, p := range s.Profiles {
		if !p.Deservice {
			continue
		}
		for _, srv := range p.Servers {
			if srv == name || (server != "" && srv == server) {
				ids = append(ids, id)
				break
			}
		}
	}
	sort.Strings(ids)
	return ids
}

// DeservicedServers maps every server listed in a deservice profile to the
// first such profile's id (the node rules need it).
func (s *Snapshot) DeservicedServers() map[string]string {
	out := make(map[string]string)
	ids := make([]string, 0, len(s.Profiles))
	for id := range s.Profiles {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p := s.Profiles[id]
		if !p.Deservice {
			continue
		}
		for _, srv := range p.Servers {
			if _, ok := out[srv]; !ok {
				out[srv] = id
			}
		}
	}
	return out
}
