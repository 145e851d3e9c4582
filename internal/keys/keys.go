// Package keys names every Redis key of the sipedge contract (SPEC §2),
// and the messages of its events channel.
// All processes (sipedge, sipedgectl, confnode) build key names here so a
// configurable prefix changes them everywhere at once.
package keys

import "strings"

// DefaultPrefix is the key prefix used when none is configured.
const DefaultPrefix = "sipedge:"

// Keys builds key names under one prefix.
type Keys struct{ Prefix string }

// New returns Keys for prefix, or for DefaultPrefix when prefix is empty.
func New(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{Prefix: prefix}
}

// Nodes is the SET of media node names.
func (k Keys) Nodes() string { return k.Prefix + "nodes" }

// Node is the HASH describing one media node.
func (k Keys) Node(name string) string { return k.Prefix + "node:" + name }

// Instances is the SET of sipedge instance names.
func (k Keys) Instances() string { return k.Prefix + "instances" }

// Instance is the HASH each sipedge instance writes about itself.
func (k Keys) Instance(name string) string { return k.Prefix + "instance:" + name }

// Profiles is the SET of deservice profile ids.
func (k Keys) Profiles() string { return k.Prefix + "profiles" }

// Profile is the HASH of one deservice profile.
func (k Keys) Profile(id string) string { return k.Prefix + "profile:" + id }

// Exceptions is the SET of instance names exempt from the 503 rule.
func (k Keys) Exceptions() string { return k.Prefix + "exceptions" }

// Settings is the HASH of run-time settings.
func (k Keys) Settings() string { return k.Prefix + "settings" }

// Conf is the HASH holding placement and live state of an active conference.
func (k Keys) Conf(id string) string { return k.Prefix + "conf:" + id }

// ConfPattern matches every Conf key (for SCAN).
func (k Keys) ConfPattern() string { return k.Prefix + "conf:*" }

// Reconciler is the STRING naming the instance whose turn it is to
// reconcile the conference keys (admission.Ledger), a lease that instance
// renews; one instance does it for the cluster.
func (k Keys) Reconciler() string { return k.Prefix + "reconciler" }

// ConfCfg is the HASH of per-conference overrides.
func (k Keys) ConfCfg(id string) string { return k.Prefix + "confcfg:" + id }

// Events is the pub/sub channel on which changes are announced.
func (k Keys) Events() string { return k.Prefix + "events" }

// Placements is the pub/sub channel on which the Ledger's scripts announce
// every conference they give a node (the HSETNX that creates the node field
// of sipedge:conf:<id>) and every conference key they delete: with a scan
// of the conference keys it tells every instance which conferences have a
// placement, so a new conference is placed without asking Redis.
func (k Keys) Placements() string { return k.Prefix + "placements" }

// PlacedMessage and GoneMessage are the messages of the placements channel:
// "+<id>" when conference id is given a node, "-<id>" when its key is
// deleted (no live instance holds a dialog of it). The Lua scripts that
// publish them build the same strings.
func PlacedMessage(id string) string { return "+" + id }

// GoneMessage: see PlacedMessage.
func GoneMessage(id string) string { return "-" + id }

// MovedMessage is the placements channel's message for conference id
// moved off a failed node (admission.ConfStore.Move): instances holding a
// local answer for its node drop it. The move script builds the same
// string.
func MovedMessage(id string) string { return "~" + id }

// ParseMoved reads a MovedMessage; ok is false for anything else.
func ParseMoved(msg string) (id string, ok bool) {
	if len(msg) < 2 || msg[0] != '~' {
		return "", false
	}
	return msg[1:], true
}

// ParsePlacement reads a message of the placements channel: the id, and
// whether it was placed (true) or is gone (false); ok is false for
// anything else.
func ParsePlacement(msg string) (id string, placed, ok bool) {
	if len(msg) < 2 || (msg[0] != '+' && msg[0] != '-') {
		return "", false, false
	}
	return msg[1:], msg[0] == '+', true
}

// RouteSecret is the STRING holding the shared key that signs Record-Route
// parameters, so every instance can verify routes written by any other.
func (k Keys) RouteSecret() string { return k.Prefix + "route_secret" }

// RouteSecretPrev is the STRING holding the route secret before the last
// rotation: instances still accept routes made with it, never make new ones.
func (k Keys) RouteSecretPrev() string { return k.Prefix + "route_secret_prev" }

// RouteSecretNext is the STRING holding the route secret a rotation is about
// to make current: instances accept it before any of them encodes with it.
func (k Keys) RouteSecretNext() string { return k.Prefix + "route_secret_next" }

// NodeSecret is the STRING holding the key media nodes sign their
// X-Sipedge-* requests with (X-Sipedge-Auth); sipedge verifies it.
func (k Keys) NodeSecret() string { return k.Prefix + "node_secret" }

// NodeCalls is the HASH node name -> active dialogs through sipedge on it.
func (k Keys) NodeCalls() string { return k.Prefix + "node_calls" }

// ProfilePattern matches every Profile key (for SCAN).
func (k Keys) ProfilePattern() string { return k.Prefix + "profile:*" }

// InstanceCalls is the HASH instance name -> active conference dialogs it
// established, kept cluster-wide so a BYE through another instance counts.
func (k Keys) InstanceCalls() string { return k.Prefix + "instance_calls" }

// Dial is the LIST of dial requests (JSON) for one media node: sipedgectl
// pushes with LPUSH, the node takes the oldest with BRPOP and places the call
// through sipedge.
func (k Keys) Dial(node string) string { return k.Prefix + "dial:" + node }

// Participants is the HASH Call-ID -> participant JSON of one conference,
// written by sipedge.
func (k Keys) Participants(conf string) string { return k.Prefix + "participants:" + conf }

// confEndPrefix starts the events-channel message that makes every
// instance end its legs of a conference now.
const confEndPrefix = "conf-end "

// ConfEnd is the events message announcing that conference id ended.
func ConfEnd(id string) string { return confEndPrefix + id }

// ParseConfEnd reads a ConfEnd message; ok is false for any other message
// (every other message just means "reload").
func ParseConfEnd(msg string) (id string, ok bool) {
	rest, found := strings.CutPrefix(msg, confEndPrefix)
	if id = strings.TrimSpace(rest); !found || id == "" {
		return "", false
	}
	return id, true
}

// Calls is the HASH of one instance's share of the dialog counts (fields
// n:<node>, c:<conf>, t), rewritten with its heartbeat and expiring when it
// stops: node_calls, instance_calls and conference dialog counts are sums
// of the shares of the live instances.
func (k Keys) Calls(instance string) string { return k.Prefix + "calls:" + instance }

// Ended is the SET of dialogs set up by instance whose BYE passed another
// instance: the owner removes them from its dialog set.
func (k Keys) Ended(instance string) string { return k.Prefix + "ended:" + instance }

// Rollout is the HASH of the rolling upgrade `sipedgectl rollout` is
// taking the nodes through (fields nodes, index, phase, hook, started_ms,
// updated_ms), so an interrupted rollout resumes where it stopped.
func (k Keys) Rollout() string { return k.Prefix + "rollout" }

// View is the STRING (JSON, short expiry) in which an instance publishes
// what it sees of the media nodes: probe health, ring membership, invalid
// hashes (internal/view).
func (k Keys) View(instance string) string { return k.Prefix + "view:" + instance }

// ParticipantCounts is the HASH of a conference's participant counters,
// fields <instance>/<boot>:<counter>, kept in step with Participants by the
// script that writes or removes a record: the conference rules read it
// instead of every record.
func (k Keys) ParticipantCounts(conf string) string { return k.Prefix + "participant_counts:" + conf }

// ParticipantShares is the HASH Call-ID -> what that participant adds to
// ParticipantCounts, so a rewrite or a removal takes back exactly that.
func (k Keys) ParticipantShares(conf string) string { return k.Prefix + "participant_shares:" + conf }

// MediaStats is the HASH Call-ID -> packet counters (JSON) of the calls one
// instance anchors, rewritten every second with a short TTL; read only by
// sipedgectl.
func (k Keys) MediaStats(instance string) string { return k.Prefix + "media_stats:" + instance }
