package contract

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/media/policy"
)

// ErrBadJSON is wrapped by a FieldError for a JSON value of the contract
// (participant, media counters, dial request) that does not decode.
var ErrBadJSON = errors.New("not a JSON object of the contract")

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

// ParseParticipant decodes the participant record stored under field
// callID of conference conf's hash. The hash field is the authority for the
// Call-ID. A record that does not decode, or whose role, kind or
// keep_alive is outside the contract, is reported with the value as
// stored; the decoded fields are returned either way.
func ParseParticipant(k keys.Keys, conf, callID, raw string) (Participant, *FieldError) {
	var p Participant
	key := k.Participants(conf)
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return Participant{CallID: callID}, bad(key, callID, raw, ErrBadJSON, "bad participant JSON: %v", err)
	}
	p.CallID = callID
	if _, err := policy.ParseRole(p.Role); err != nil {
		return p, bad(key, callID, raw, ErrUnknown, "%v", err)
	}
	if _, err := policy.ParseKind(p.Kind); err != nil {
		return p, bad(key, callID, raw, ErrUnknown, "%v", err)
	}
	if p.KeepAlive != "" {
		if _, err := policy.ParseKeepAlive(p.KeepAlive); err != nil {
			return p, bad(key, callID, raw, ErrUnknown, "%v", err)
		}
	}
	if strings.TrimSpace(p.Instance) == "" {
		return p, bad(key, callID, raw, ErrMissing, "participant has no instance")
	}
	return p, nil
}

// ParseMediaCounters decodes the per-second counters of callID in
// instance's media_stats hash.
func ParseMediaCounters(k keys.Keys, instance, callID, raw string) (MediaCounters, *FieldError) {
	var c MediaCounters
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return MediaCounters{}, bad(k.MediaStats(instance), callID, raw, ErrBadJSON, "bad media counters JSON: %v", err)
	}
	return c, nil
}

// ParseDial decodes one entry of node's dial queue and checks its
// conference id, kind, role and keep_alive. The URI is the dialler's to
// parse (it needs a SIP URI parser); it is only required here.
func ParseDial(k keys.Keys, node, raw string) (Dial, *FieldError) {
	var d Dial
	key := k.Dial(node)
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		return d, bad(key, "", raw, ErrBadJSON, "bad dial request JSON: %v", err)
	}
	if err := CheckDial(d); err != nil {
		return d, bad(key, err.Field, raw, err.Err, "%s", err.Reason)
	}
	return d, nil
}

// DialError names the JSON field of a dial request that is wrong.
type DialError struct {
	Field, Reason string
	Err           error // a sentinel of this package
}

func (e *DialError) Error() string { return e.Reason }
func (e *DialError) Unwrap() error { return e.Err }

// CheckDial checks a dial request built by sipedgectl or read from the
// queue: the same rules for the writer and the reader.
func CheckDial(d Dial) *DialError {
	switch {
	case d.Conf == "":
		return &DialError{"conf", "conf is empty: want a conference id", ErrMissing}
	case strings.ContainsAny(d.Conf, " \t\r\n@:;<>\""):
		return &DialError{"conf", "conf " + strconv.Quote(d.Conf) + ": want a conference id (no spaces or @:;<>\")", ErrNotID}
	case d.Kind != string(policy.KindADP) && d.Kind != string(policy.KindAdmin):
		return &DialError{"kind", "kind " + strconv.Quote(d.Kind) + ": want adp or admin", ErrUnknown}
	case d.Role != "" && d.Role != string(policy.RoleHost) && d.Role != string(policy.RoleGuest):
		return &DialError{"role", "role " + strconv.Quote(d.Role) + ": want host, guest or empty", ErrUnknown}
	case d.KeepAlive != "" && !validKeepAlive(d.KeepAlive):
		return &DialError{"keep_alive", "keep_alive " + strconv.Quote(d.KeepAlive) + ": want yes, no, if-multiple or empty", ErrUnknown}
	case strings.TrimSpace(d.URI) == "":
		return &DialError{"uri", "uri is empty: want sip:user@host[:port]", ErrMissing}
	}
	return nil
}

func validKeepAlive(s string) bool {
	switch policy.KeepAlive(s) {
	case policy.KeepYes, policy.KeepNo, policy.KeepIfMultiple:
		return true
	}
	return false
}
