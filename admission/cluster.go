package admission

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Profile is one deservice profile (sipedge:profile:<id>).
type Profile struct {
	ID, Name, Description string
	Servers               []string // server or instance names
	Deservice             bool     // status = deservice
}

// Instance is what another sipedge instance published about itself.
type Instance struct {
	Name, Site, Server string
	Heartbeat          time.Time
	State              string // as published: normal, draining, drained ("" if never)
}

// Cluster is the shared state admission reads: an immutable snapshot.
type Cluster struct {
	Profiles   map[string]Profile
	Exceptions map[string]bool
	Instances  map[string]Instance
	Settings   Settings
	ReadAt     time.Time
}

// ParseProfile reads a profile hash; a bad status keeps last's (or normal).
func ParseProfile(id string, fields map[string]string, last Profile) (Profile, []FieldError) {
	p := Profile{ID: id, Name: fields["name"], Description: fields["description"]}
	for _, s := range strings.Split(fields["servers"], ",") {
		if s = strings.TrimSpace(s); s != "" {
			p.Servers = append(p.Servers, s)
		}
	}
	switch st := strings.TrimSpace(fields["status"]); st {
	case "deservice":
		p.Deservice = true
	case "normal", "":
	default:
		p.Deservice = last.Deservice
		return p, []FieldError{{Field: "status", Err: fmt.Errorf("%q is not normal or deservice", st)}}
	}
	return p, nil
}

// ParseInstance reads an instance hash.
func ParseInstance(name string, fields map[string]string) (Instance, error) {
	in := Instance{Name: name, Site: fields["site"], Server: fields["server"], State: fields["state"]}
	if hb := fields["heartbeat"]; hb != "" {
		ms, err := strconv.ParseInt(hb, 10, 64)
		if err != nil {
			return in, FieldError{Field: "heartbeat", Err: fmt.Errorf("%q is not unix milliseconds", hb)}
		}
		in.Heartbeat = time.UnixMilli(ms)
	}
	return in, nil
}

// DeservicedBy returns the ids of deservice profiles listing name or
// server, sorted; empty when none does.
func (c *Cluster) DeservicedBy(name, server string) []string {
	var ids []string
	for id, p := range c.Profiles {
		if !p.Deservice {
			continue
		}
		for _, s := range p.Servers {
			if s == name || (server != "" && s == server) {
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
func (c *Cluster) DeservicedServers() map[string]string {
	out := make(map[string]string)
	ids := make([]string, 0, len(c.Profiles))
	for id := range c.Profiles {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p := c.Profiles[id]
		if !p.Deservice {
			continue
		}
		for _, s := range p.Servers {
			if _, ok := out[s]; !ok {
				out[s] = id
			}
		}
	}
	return out
}
