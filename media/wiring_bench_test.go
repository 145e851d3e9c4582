package media

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
)

// BenchmarkJoinedEnded is a call's media life on the SIP path: opened,
// anchored, answered into its conference, ended (the participant leaves
// in the background).
func BenchmarkJoinedEnded(b *testing.B) {
	e := newEnv(b)
	in := e.instance("A", withPairs(64))
	offer := audioSDP(netip.MustParseAddrPort("192.0.2.10:4000"), 1)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		id := "call-" + strconv.Itoa(i)
		i++
		in.mg.Open(id, "conf-1", true)
		if _, err := in.mg.SDP(id, true, offer); err != nil {
			b.Fatal(err)
		}
		in.mg.Joined(ctx, Join{CallID: id, ConfID: "conf-1", AOR: "a@example.com", Role: "host"})
		in.mg.Ended(id)
	}
}
