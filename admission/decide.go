// Package admission decides what happens to a request that would start a
// new dialog: admit it to a media node (and which one), or reject it.
//
// The decision itself (Decide) is a pure function of the request's facts and
// a snapshot of the shared state, so every rule is table-tested without I/O;
// the Admitter gathers that state (ring snapshot, sticky placement from
// Redis) and records placements when dialogs start and end.
package admission

import (
	"github.com/sipedge/sipedge/ring"
)

// Rejection reasons: the SIP reason phrase of the 503.
const (
	ReasonNoNode      = "No media node available"
	ReasonMaintenance = "System in maintenance mode"
	ReasonShutdown    = "Instance shutting down"
)

// Rejection causes: stable slugs for metric labels and log fields.
const (
	CauseNoNode     = "no_node"
	CauseDeserviced = "deserviced"
	CauseShutdown   = "shutting_down"
	CauseRedirected = "redirected" // deserviced, answered 302 to a standby instance
)

// Causes lists every rejection cause (metrics start at zero for each).
var Causes = []string{CauseNoNode, CauseDeserviced, CauseShutdown, CauseRedirected}

// Placement says how the target node was found.
const (
	PlacementSticky = "sticky" // the conference is already active on this node
	PlacementRing   = "ring"   // consistent hash of the key
)

// Request holds the facts of a new-dialog request that admission needs.
type Request struct {
	Method string // INVITE, REGISTER, SUBSCRIBE, or another out-of-dialog method
	CallID string
	ConfID string // Request-URI user (conference id)
	AOR    string // To URI user@host (REGISTER, SUBSCRIBE)
}

// Key is the value hashed onto the ring: the AOR for registrations and
// subscriptions, the conference id for everything else.
func (r Request) Key() string {
	if r.UsesAOR() {
		return r.AOR
	}
	return r.ConfID
}

// NewDialog reports whether the method starts a dialog or registration
// that a deserviced instance turns away; everything else always passes.
func (r Request) NewDialog() bool {
	return r.Method == "INVITE" || r.Method == "REGISTER" || r.Method == "SUBSCRIBE"
}

// UsesAOR reports whether the request is placed by its address of record.
func (r Request) UsesAOR() bool { return r.Method == "REGISTER" || r.Method == "SUBSCRIBE" }

// NodeView is the part of a ring snapshot the decision reads.
type NodeView interface {
	Lookup(key string) (ring.Node, bool)
	Node(name string) (ring.Node, bool)
	Healthy(name string) bool
}

var _ NodeView = (*ring.Snapshot)(nil)

// State is everything Decide looks at besides the request.
type State struct {
	Instance   InstanceVerdict
	Nodes      NodeView
	Sticky     string // node of the active conference, "" if none
	RetryAfter int    // seconds, for 503 answers
	// Redirect: a deserviced instance answers new dialogs 302 to the
	// least-loaded normal instance of its site (deservice_answer 302)
	// instead of 503; without such an instance it still answers 503.
	Redirect bool
}

// Verdict is the outcome of Decide.
type Verdict struct {
	Admit      bool
	Node       ring.Node
	Placement  string
	Code       int    // SIP status when rejected
	Reason     string // rejection reason phrase
	Cause      string // rejection cause slug (Causes)
	Contact    string // 302: host:port of the instance to try instead
	RetryAfter int    // seconds, sent with 503
}

// Decide admits the request to a node or rejects it. It does no I/O.
func Decide(req Request, st State) Verdict {
	if st.Instance.Reject && req.NewDialog() {
		if st.Instance.ShuttingDown {
			return Verdict{Code: 503, Reason: ReasonShutdown, Cause: CauseShutdown, RetryAfter: st.RetryAfter}
		}
		if st.Redirect && st.Instance.RedirectTo != "" {
			return Verdict{Code: 302, Reason: "Moved Temporarily", Cause: CauseRedirected, Contact: st.Instance.RedirectTo}
		}
		return Verdict{Code: 503, Reason: ReasonMaintenance, Cause: CauseDeserviced, RetryAfter: st.RetryAfter}
	}
	if st.Sticky != "" && !req.UsesAOR() {
		// A conference is never split: it stays on its node while the node
		// is alive, even when it is draining for maintenance.
		if n, ok := st.Nodes.Node(st.Sticky); ok && st.Nodes.Healthy(st.Sticky) {
			return Verdict{Admit: true, Node: n, Placement: PlacementSticky}
		}
	}
	if n, ok := st.Nodes.Lookup(req.Key()); ok {
		return Verdict{Admit: true, Node: n, Placement: PlacementRing}
	}
	return Verdict{Code: 503, Reason: ReasonNoNode, Cause: CauseNoNode, RetryAfter: st.RetryAfter}
}
