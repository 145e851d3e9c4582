package proxy

import "testing"

// BenchmarkInDialogRoutingSeveralAddresses is BenchmarkInDialogRouting on
// a proxy with three listen addresses: the arrival address is looked up
// from the Route and the departure from the destination's family.
func BenchmarkInDialogRoutingSeveralAddresses(b *testing.B) {
	p := multiProxy()
	req := parseRequest(b, benchBye(b, p))
	req.SetSource("127.0.0.3:40000")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st, n, err := p.ourRoute(req)
		if err != nil || n != 1 {
			b.Fatal(err)
		}
		out := req.Clone()
		dropRoutes(out, n)
		p.prepareForward(req, out, p.nextHop(req, st), p.branch(nil, req), nil)
	}
}
