package admission

import "github.com/sipedge/sipedge/internal/contract"

// Profile is one deservice profile (sipedge:profile:<id>).
type Profile = contract.Profile

// Instance is what another sipedge instance published about itself.
type Instance = contract.Instance

// Cluster is the shared state admission reads: the immutable snapshot of
// the Redis contract (profiles, exceptions, instances, settings; the ring
// reads the nodes of the same snapshot). DeservicedBy and
// DeservicedServers answer the 503 rule's questions.
type Cluster = contract.Snapshot
