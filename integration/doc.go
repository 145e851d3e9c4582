// Package integration holds sipedge's end-to-end tests. They run the real
// binaries (cmd/sipedge, cmd/confnode, cmd/sipedgectl, built once by
// TestMain), a private redis-server per test and real sipp processes as
// callers and as media nodes, all on 127.0.0.1 with free ports picked at
// run time. Nothing is mocked.
//
// Run them with `go test ./integration/ -count=1` (part of `make test`,
// which installs redis-server and sipp; a test fails, never skips, when
// one is missing). Every process is stopped when its test ends; its
// output is in the test's t.TempDir() and is printed when the test fails.
// Set SIPEDGE_INTEGRATION_KEEP=/some/dir to keep every test's process logs
// and sipp traces there.
//
// The sipp scenarios are in testdata/:
//
//   - uac_call.xml: a caller, INVITE / ACK / BYE. The conference id
//     (Request-URI user) and the address the BYE goes to come from an
//     injection CSV, so one sipp run covers many conferences. ACK and BYE
//     are built from the 200's route set ([routes], [next_url]) and so carry
//     sipedge's Record-Route; a setdest action before the BYE can send it to
//     another sipedge instance than the INVITE.
//   - uac_register.xml: a phone registering, AOR from the CSV.
//   - node_uas.xml: a media node. It answers OPTIONS (sipedge's health
//     probes), REGISTER, SUBSCRIBE and INVITE / ACK / BYE, echoes
//     Record-Route, and answers a BYE to the sent-by of its top Via (RFC
//     3261 18.2.2) rather than to the peer the INVITE came from, which is
//     what sipp would do by itself. Its -message_file trace is how a test
//     knows which node received which request, and through which instance
//     (the top Via).
package integration
