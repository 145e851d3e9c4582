//go:build !linux

package logging

import "io"

// isTerminal is false off Linux: console output there is never coloured.
func isTerminal(io.Writer) bool { return false }
