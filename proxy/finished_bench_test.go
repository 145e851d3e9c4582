package proxy

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// The read filter's cost per UDP datagram: every request is scanned and
// looked up (a miss: a new transaction), a retransmission of a finished
// BYE is answered from the table (a hit).
//
//	go test -run '^$' -bench 'Absorb' -benchmem ./proxy/
func BenchmarkAbsorb(b *testing.B) {
	r := newCallRig(b, false)
	route := []byte("<sip:x@127.0.0.1;lr>")
	data := appendRequest(nil, "BYE", r.ruri, r.caller.addr(), 1, 2, route)
	info := sip.TransportReadProps{Transport: "UDP", RemoteAddr: r.caller.conn.LocalAddr()}
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if r.px.absorb(info, data) {
				b.Fatal("absorbed a request of no finished transaction")
			}
		}
	})
	b.Run("hit", func(b *testing.B) {
		tx, ok := scanServerKey(data, nil, "")
		if !ok {
			b.Fatal("scan failed")
		}
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer pc.Close()
		dest := r.caller.conn.LocalAddr().(*net.UDPAddr).AddrPort()
		r.px.fin.server.put(string(tx.key), finishedEntry{data: encodeDest(dest, []byte("SIP/2.0 200 OK\r\n\r\n")),
			conn: r.px.fin.connID(pc)})
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if !r.px.absorb(info, data) {
				b.Fatal("not absorbed")
			}
		}
	})
}

// encodeDest writes dest and then b into one string, as respondTx does.
func encodeDest(dest netip.AddrPort, b []byte) string {
	var out bytes.Buffer
	out.Grow(destLen + len(b))
	appendDest(&out, dest)
	out.Write(b)
	return unsafeString(out.Bytes())
}
