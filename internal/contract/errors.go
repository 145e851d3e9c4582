// Package contract owns the Redis contract of SPEC §2: the records every
// sipedge process reads or writes (media nodes, instances, deservice
// profiles, exceptions, settings, conference placements, participants,
// media counters and dial requests), each parsed and
// validated here once, with one error type, and the writers sipedgectl and
// sipedge use to store them. internal/keys names the keys.
//
// Watcher reads the whole contract in one pipelined round trip per reload,
// on one pub/sub subscription, and publishes an immutable Snapshot that the
// ring, admission and media read without locking.
package contract

import (
	"errors"
	"fmt"
)

// Sentinel errors wrapped by FieldError.Err, for callers that branch.
var (
	ErrMissing     = errors.New("missing")             // a required field is absent or empty
	ErrNoHash      = errors.New("hash does not exist") // a set member without its hash
	ErrNotNumber   = errors.New("not a number")        // weight, load
	ErrNotSeconds  = errors.New("not a whole number of seconds")
	ErrOutOfRange  = errors.New("out of range")
	ErrNotFlag     = errors.New("not 0 or 1")            // maintenance, capable
	ErrNotUnixMs   = errors.New("not unix milliseconds") // heartbeat, drain_started, restored_at
	ErrUnknown     = errors.New("unknown value")         // an enum field (status, transport, drain_action)
	ErrNotHostPort = errors.New("not host:port")
	ErrNotID       = errors.New("not an id") // a conference id with spaces or SIP delimiters
)

// FieldError is a bad value in one field of one Redis hash of the
// contract. Field is "" when the record as a whole is bad (its hash does
// not exist). Reason is the operator-facing text, quoting the bad value;
// Err is one of the sentinels above.
type FieldError struct {
	Key    string // Redis key, e.g. sipedge:node:n1
	Field  string // hash field, "" for the whole record
	Value  string // the raw value as stored
	Reason string // what is wrong, e.g. `"abc" is not a number`
	Err    error  // sentinel
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.Key, e.Reason)
	}
	return fmt.Sprintf("%s field %q: %s", e.Key, e.Field, e.Reason)
}

func (e *FieldError) Unwrap() error { return e.Err }

// bad builds a FieldError whose Reason is format applied to args.
func bad(key, field, value string, sentinel error, format string, args ...any) *FieldError {
	return &FieldError{Key: key, Field: field, Value: value, Err: sentinel, Reason: fmt.Sprintf(format, args...)}
}
