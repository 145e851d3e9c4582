// Package ring reads the media nodes from Redis (SPEC §2), judges which of
// them may take new conferences, and places keys (conference ids, AORs) on
// those nodes with a weighted consistent hash.
//
// The parts, from pure to effectful:
//
//   - ParseNode / Load turn sipedge:node:<name> hashes into Nodes; a bad
//     value makes that one node invalid, never the whole load.
//   - New builds a Ring: weighted rendezvous hashing over Members.
//   - BuildSnapshot judges health and eligibility from nodes, probe state
//     and a clock, and builds the ring of eligible nodes. sipedgectl calls
//     it too, so the CLI shows exactly what the proxy computes.
//   - Watcher keeps a Snapshot current: periodic resync, reload on any
//     message on the events channel, SIP OPTIONS probes through a Pinger,
//     fail-static on Redis errors. Readers get the snapshot lock-free.
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
