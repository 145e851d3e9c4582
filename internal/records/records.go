// Package records defines the JSON values of the Redis contract that more
// than one process reads and writes (SPEC §2): sipedge writes participants
// and sipedgectl shows them; sipedgectl queues dial requests and confnode
// places the calls. One definition keeps writer and readers in step.
package records

// Participant is one value of HASH <prefix>participants:<conf>, keyed by
// Call-ID, written by the sipedge instance that anchors the call.
type Participant struct {
	CallID    string `json:"call_id"`
	Instance  string `json:"instance"`
	From      string `json:"from"`       // the endpoint's AOR, user@host
	Role      string `json:"role"`       // host | guest
	Kind      string `json:"kind"`       // normal | adp | admin
	KeepAlive string `json:"keep_alive"` // yes | no | if-multiple
	Media     bool   `json:"media"`      // joined with audio or video
	Present   bool   `json:"present"`    // its endpoint's RTP flows
	JoinedMs  int64  `json:"joined_ms"`
	UpdatedMs int64  `json:"updated_ms"` // rewritten every second while the instance lives
	LastRTPMs int64  `json:"last_rtp_ms"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
	Lost      uint64 `json:"lost"`
}

// Dial is one entry of LIST <prefix>dial:<node>: a call the node places
// into its conference through sipedge. Empty Role or KeepAlive: no header
// is sent and sipedge applies its defaults.
type Dial struct {
	Conf      string `json:"conf"`
	URI       string `json:"uri"`
	Kind      string `json:"kind"` // adp | admin
	Role      string `json:"role"`
	KeepAlive string `json:"keep_alive"`
	ID        string `json:"id"`
}
