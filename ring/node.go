package ring

import "github.com/sipedge/sipedge/internal/contract"

// Node is one media node as described by its sipedge:node:<name> hash;
// the contract package parses and validates it.
type Node = contract.Node

// Defaults for fields a node hash may leave out.
const (
	DefaultWeight    = contract.DefaultWeight
	DefaultTransport = contract.DefaultTransport
)
