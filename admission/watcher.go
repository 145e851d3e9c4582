package admission

import (
	"github.com/sipedge/sipedge/internal/contract"
	"github.com/sipedge/sipedge/ring"
)

// StateWatcher gives admission the cluster state of the process's one
// contract watcher: profiles, exceptions, instances and settings, parsed
// once there, bad values logged once per change with the last good value
// kept, and the whole last snapshot kept through a Redis outage. Its owner
// starts and runs the contract watcher.
type StateWatcher struct {
	src *contract.Watcher
}

// NewStateWatcher reads the cluster state from src.
func NewStateWatcher(src *contract.Watcher) *StateWatcher { return &StateWatcher{src: src} }

// Cluster returns the current snapshot (never nil).
func (w *StateWatcher) Cluster() *Cluster { return w.src.Snapshot() }

// NodePolicy gives the ring the node rules' inputs from the current state.
func (w *StateWatcher) NodePolicy() ring.Policy {
	c := w.Cluster()
	return ring.Policy{DeservicedServers: c.DeservicedServers(), SlowStart: c.Settings.SlowStart,
		DrainTimeout: c.Settings.DrainTimeout}
}

// SetDefaults replaces the YAML defaults of sipedge:settings while sipedge
// runs (SIGHUP); values set in Redis still override them. They apply at the
// next reload, which it asks for.
func (w *StateWatcher) SetDefaults(s Settings) { w.src.SetDefaults(s) }

var _ ring.PolicySource = (*StateWatcher)(nil)
