// Package media will anchor RTP, track participant presence and end
// conferences by the SPEC §5 rules. It is empty until that work lands; the
// directory exists so the layout matches the architecture.
package media
