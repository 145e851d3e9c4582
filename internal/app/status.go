package app

import (
	"context"
	"time"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/media"
	"github.com/sipedge/sipedge/proxy"
	"github.com/sipedge/sipedge/ring"
)

type nodeStatus struct {
	Name         string  `json:"name"`
	Addr         string  `json:"addr"`
	Transport    string  `json:"transport"`
	Site         string  `json:"site"`
	Server       string  `json:"server"`
	Weight       float64 `json:"weight"`
	Load         float64 `json:"load"`
	Maintenance  bool    `json:"maintenance"`
	Capable      bool    `json:"capable"`
	Healthy      bool    `json:"healthy"`
	Eligible     bool    `json:"eligible"`
	Reason       string  `json:"reason,omitempty"`
	State        string  `json:"state"`
	InService    bool    `json:"in_service"`
	OutReason    string  `json:"out_reason,omitempty"`
	Calls        int     `json:"calls"`
	Effective    float64 `json:"effective_weight"`
	KeptActive   bool    `json:"kept_active,omitempty"`
	DrainExpired bool    `json:"drain_expired,omitempty"`
	HeartbeatMs  int64   `json:"heartbeat_age_ms,omitempty"`
}

type statusDoc struct {
	Instance struct {
		Name       string   `json:"name"`
		Site       string   `json:"site"`
		Server     string   `json:"server"`
		SIP        string   `json:"sip"`
		Redis      string   `json:"redis"`
		State      string   `json:"state"`
		Dialogs    int      `json:"dialogs"`
		Deserviced bool     `json:"deserviced"`
		HeldBack   bool     `json:"held_back"`
		Profiles   []string `json:"profiles,omitempty"`
	} `json:"instance"`
	Ring struct {
		Version uint64 `json:"version"`
		Members int    `json:"members"`
	} `json:"ring"`
	Nodes []nodeStatus `json:"nodes"`
	// InvalidNodes are listed nodes whose hash sipedge cannot use (ignored).
	InvalidNodes map[string]string `json:"invalid_nodes,omitempty"`
	Media        *mediaStatus      `json:"media,omitempty"` // absent when anchoring is off
}

// mediaStatus is the media part of /api/status: relay usage and the
// conferences with participants on this instance.
type mediaStatus struct {
	Sessions    int                    `json:"sessions"`
	PortsInUse  int                    `json:"ports_in_use"`
	Conferences []media.ConferenceView `json:"conferences"`
}

func status(cfg config.Config, redisAddr string, px *proxy.Proxy, w *ring.Watcher, a *admission.Admitter, mgr *media.Manager, cs *contract.Snapshot) statusDoc {
	var d statusDoc
	d.Instance.Name, d.Instance.Site, d.Instance.Server = cfg.Name, cfg.Site, cfg.Server
	d.Instance.Redis = redisAddr
	v := a.Instance()
	d.Instance.SIP, d.Instance.Dialogs = px.Addr(), px.ActiveDialogs()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	if n, err := a.Calls(ctx); err == nil {
		d.Instance.Dialogs = n // cluster-wide count of the dialogs set up here
	}
	cancel()
	d.Instance.State = admission.InstanceState(v, d.Instance.Dialogs)
	d.Instance.Deserviced, d.Instance.HeldBack, d.Instance.Profiles = v.Deserviced, v.HeldBack, v.Profiles
	snap := w.Snapshot()
	d.Ring.Version, d.Ring.Members = snap.Version(), snap.Ring().Len()
	now := time.Now()
	d.Nodes = []nodeStatus{}
	for _, s := range snap.Statuses() {
		n := s.Node
		ns := nodeStatus{Name: n.Name, Addr: n.Addr, Transport: n.Transport, Site: n.Site, Server: n.Server,
			Weight: n.Weight, Load: s.ReportedLoad, Maintenance: n.Maintenance, Capable: n.Capable,
			Healthy: s.Healthy, Eligible: s.Eligible, Reason: s.Reason, State: s.State, InService: s.InService,
			OutReason: s.OutReason, Calls: s.Calls, Effective: s.EffectiveWeight, KeptActive: s.KeptActive,
			DrainExpired: s.DrainExpired}
		if !n.Heartbeat.IsZero() {
			ns.HeartbeatMs = now.Sub(n.Heartbeat).Milliseconds()
		}
		d.Nodes = append(d.Nodes, ns)
	}
	for name, e := range cs.NodeErrs {
		if d.InvalidNodes == nil {
			d.InvalidNodes = map[string]string{}
		}
		d.InvalidNodes[name] = e.Error()
	}
	if mgr != nil {
		d.Media = &mediaStatus{Sessions: mgr.Sessions(), PortsInUse: mgr.InUse(), Conferences: mgr.Conferences()}
	}
	return d
}
