// Package ring reads the media nodes from Redis (SPEC §2), judges which of
// them may take new conferences, and places keys (conference ids, AORs) on
// those nodes with a weighted consistent hash.
//
// The parts, from pure to effectful:
//
//   - internal/contract parses sipedge:node:<name> hashes into Nodes (one
//     parser for sipedge and sipedgectl); a bad value makes that one node
//     invalid, never the whole load.
//   - New builds a Ring: weighted rendezvous hashing over Members.
//   - BuildSnapshot judges health and eligibility from nodes, probe state
//     and a clock, and builds the ring of eligible nodes. sipedgectl calls
//     it too, so the CLI shows exactly what the proxy computes.
//   - BuildSnapshotFrom also applies the service rules (SPEC §3–4) from a
//     Policy (deservice profiles, slow_start, drain_timeout, supplied by the
//     admission package) and the calls per node; BuildSnapshot is it with
//     none of those.
//   - MarkOutOfService / MarkInService record service transitions in the
//     node hash (drain_started, restored_at) with Lua scripts, so
//     instances racing on the same change agree on one timestamp.
//   - Watcher keeps a Snapshot current from the process's one
//     contract.Watcher (periodic resync, reload on any message on the
//     events channel): a rebuild after each of its reloads, SIP OPTIONS
//     probes through a Pinger,
//     fail-static on Redis errors, and the Mark calls when a node's service
//     state changed (nothing is written while nothing changes). Readers get
//     the snapshot lock-free.
//
// # Service state
//
// Health (heartbeat, probes) and service are judged apart. A node is out of
// service for new conferences when capable=0 (forced maintenance; the manual
// flag then has no effect), when a deservice profile lists its server, or
// when maintenance=1; OutReason names the first of these that holds. Out of
// service it is "draining" while sipedge counts calls on it (node_calls) and
// "maintenance" once none are left, and reports load 1.0. Sticky
// conferences stay on a node while Snapshot.Healthy holds, whatever its
// service state. Per site, when no healthy node would remain to take new
// conferences, the site's healthy out-of-service nodes stay in the ring
// (KeptActive) at full weight, and their drain does not expire while they
// serve. A draining node whose drain_started is older than drain_timeout is
// DrainExpired: its calls are due a BYE. On return to service its ring
// weight ramps linearly from 0 over slow_start from restored_at, so Version
// moves at every reload during a ramp; a node at effective weight 0 takes
// nothing, unless no node at all has a positive weight.
//
// # Metrics
//
//	sipedge_ring_nodes{state=healthy|unhealthy|invalid}        nodes by health
//	sipedge_ring_node_states{state=normal|draining|maintenance} valid nodes by service state
//	sipedge_node_drain_calls{node}                             calls left on each out-of-service node
//	sipedge_ring_rebuilds_total                                ring changes (members or effective weights)
//	sipedge_ring_node_errors_total                             bad node hashes and node_calls values (as logged)
//	sipedge_ring_redis_errors_total{op=load|mark}              Redis errors reading nodes / recording transitions
//	sipedge_ring_probe_failures_total                          failed OPTIONS probes
//	sipedge_ring_last_load_timestamp_seconds                   last successful read
//
// # Why weighted rendezvous hashing
//
// Every member gets a score per key and the highest score wins:
//
//	u     = (splitmix64(xxhash64(key) ^ xxhash64(member)) as a float in (0,1))
//	score = -weight / ln(u)
//
// -ln(u)/weight is exponentially distributed with rate weight, so the member
// with the smallest one (the largest score) wins with probability exactly
// weight/Σweights: the logarithmic method of Schindelhauer and Schomaker
// ("Weighted distributed hash tables", 2005). Consequences we rely on:
//
//   - Exact weights in expectation, with no virtual-node quantisation:
//     100/200/300 splits 1/6, 2/6, 3/6 up to sampling noise.
//   - Minimal disruption: removing a member moves only the keys it owned
//     (≈1/n of them); the others keep their winner because their scores do
//     not depend on who else is in the ring. Adding one takes ≈w/Σw.
//   - Fractional weights ramp smoothly: raising a weight from 0 to full in
//     small steps moves keys to that node a little at a time and only to it,
//     which is what slow start (SPEC §4) needs.
//   - Deterministic across processes and restarts: only fixed hash functions
//     of the strings, no maphash, random seeds or insertion order, so every
//     sipedge instance and sipedgectl compute the same placement. (Scores are
//     float64; two scores within an ulp of each other could in theory order
//     differently on hardware whose log differs in the last bit — a chance
//     of the order of 1e-15 per key, far below any other failure.)
//   - Lookup is O(n) with n = tens of nodes and allocates nothing: one
//     xxhash of the key, one multiply-xorshift mix per member, and one log
//     per distinct weight (within equal weights the score only grows with
//     u, so only the best u of each weight needs the log).
//
// Compared with the usual alternatives: ketama (a ring of virtual points)
// needs hundreds of points per node for decent balance, approximates weights
// by point counts, and costs memory and a binary search; jump hash is fast
// and balanced but only numbers buckets 0..n-1, so removing a node other than
// the last remaps others, and it has no weights; Maglev gives O(1) lookups
// through a permutation table but moves somewhat more than 1/n on a change
// and needs the table rebuilt per change. At tens of nodes the O(n) scan is
// cheaper than any of those tables are to keep, and it is exact.
package ring
