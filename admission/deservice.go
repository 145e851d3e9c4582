package admission

import (
	"sort"
	"time"
)

// Self identifies this sipedge instance.
type Self struct {
	Name, Site, Server string
}

// InstanceVerdict says whether this instance turns new dialogs away.
type InstanceVerdict struct {
	Deserviced bool     // listed (by name or server) in a deservice profile
	Profiles   []string // the profiles that deservice it
	Exempt     bool     // in sipedge:exceptions
	Standby    []string // other alive instances of the site in normal service
	// RedirectTo is the SIP address of the standby with the fewest
	// dialogs (ties: the first by name), for deservice_answer 302.
	RedirectTo string
	Reject     bool // answer new dialogs 503
	HeldBack   bool // deserviced but still admitting (last normal instance, or exempt)
	// ShuttingDown: the process is stopping (SIGTERM). It rejects new
	// dialogs (Reject) whatever the profiles say.
	ShuttingDown bool
}

// JudgeInstance applies SPEC §3 rule 1. An instance is alive while its
// heartbeat is within heartbeatTimeout of now. It does no I/O.
func JudgeInstance(self Self, c *Cluster, now time.Time, heartbeatTimeout time.Duration) InstanceVerdict {
	v := InstanceVerdict{Profiles: c.DeservicedBy(self.Name, self.Server)}
	v.Deserviced = len(v.Profiles) > 0
	if !v.Deserviced {
		return v
	}
	v.Exempt = c.Exceptions[self.Name]
	least, leastName := 0, ""
	for _, in := range c.Instances {
		if in.Name == self.Name || in.Site != self.Site || in.Heartbeat.IsZero() {
			continue
		}
		if now.Sub(in.Heartbeat) > heartbeatTimeout {
			continue
		}
		if len(c.DeservicedBy(in.Name, in.Server)) > 0 {
			continue
		}
		if in.State == "draining" || in.State == "drained" {
			continue // turning new dialogs away itself (shutting down)
		}
		v.Standby = append(v.Standby, in.Name)
		if in.Addr != "" && (leastName == "" || in.Dialogs < least || in.Dialogs == least && in.Name < leastName) {
			least, leastName, v.RedirectTo = in.Dialogs, in.Name, in.Addr
		}
	}
	sort.Strings(v.Standby)
	v.Reject = !v.Exempt && len(v.Standby) > 0
	v.HeldBack = !v.Reject
	return v
}

// State names an instance reports (SPEC §4): normal, draining while
// deserviced with dialogs left, drained when none are left.
func InstanceState(v InstanceVerdict, dialogs int) string {
	switch {
	case !v.Reject:
		return "normal"
	case dialogs > 0:
		return "draining"
	default:
		return "drained"
	}
}
