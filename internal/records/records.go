// Package records defines the JSON values of the Redis contract that more
// than one process reads and writes (SPEC §2): sipedge writes participants
// and sipedgectl shows them; sipedgectl queues dial requests and confnode
// places the calls. One definition keeps writer and readers in step.
package records

// Participant is one value of HASH <prefix>participants:<conf>, keyed by
// Call-ID, written by the sipedge instance that anchors the call when the
// participant's state changes (joined, present, absent; removed when it
// leaves), not periodically. Boot names the run of Instance that wrote it:
// the record counts while that instance's heartbeat is fresh and its hash
// still holds that media_boot. Packets, Bytes, Lost and LastRTPMs are as of
// the last state change; MediaCounters has them every second.
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
	Boot      string `json:"boot"`       // the writing instance's run (its media_boot)
	UpdatedMs int64  `json:"updated_ms"` // when the state last changed
	LastRTPMs int64  `json:"last_rtp_ms"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
	Lost      uint64 `json:"lost"`
}

// MediaCounters is one value of HASH <prefix>media_stats:<instance>, keyed
// by Call-ID: what the participant's endpoint sent, rewritten every second
// by the instance that anchors it (the hash expires when it stops).
type MediaCounters struct {
	Conf      string `json:"conf"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
	Lost      uint64 `json:"lost"`
	LastRTPMs int64  `json:"last_rtp_ms"`
	AtMs      int64  `json:"at_ms"` // when the instance wrote it
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
