// Package media anchors the RTP of every call, follows who is really
// present and ends conferences by the SPEC §5 rules.
//
// The pieces, each in its own package:
//   - sdpx: reads and rewrites SDP (pion/sdp);
//   - relay: the UDP relay ports, latching and per-side statistics;
//   - policy: the termination rules, a pure state machine.
//
// This package ties them together for the proxy. A Manager holds one
// session per call (Call-ID) handled by this instance: the relay streams of
// its m-lines and, once the call is answered, the participant it is in its
// conference. Participants are written to Redis (sipedge:participants:<id>)
// so that every instance carrying a leg of a conference evaluates the rules
// on the same snapshot; the rules' timers and the end verdict live in the
// conference hash (sipedge:conf:<id>), so instances agree on when and why
// a conference ended, and each one sends the BYEs of its own legs.
package media
