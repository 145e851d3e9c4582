package admission

import (
	"context"
	"testing"
)

// BenchmarkAdmit_Sticky is one Admit of a new call to a conference that
// is already placed: answered from the Ledger (this instance holds a leg
// of it) or from Redis (HGET; miniredis here, so the round trip's CPU is
// the client's only).
func BenchmarkAdmit_Sticky(b *testing.B) {
	for _, held := range []bool{true, false} {
		name := "redis"
		if held {
			name = "local"
		}
		b.Run(name, func(b *testing.B) {
			e := newStickyEnv(b)
			e.leg("d1", e.sticky)
			if !held {
				e.h.remove("d1") // Redis still holds the placement
			}
			req := Request{Method: "INVITE", CallID: "new", ConfID: stickyConf}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if v := e.a.Admit(ctx, req); v.Node.Name != e.sticky {
					b.Fatalf("verdict %+v", v)
				}
			}
		})
	}
}
