package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// relayTo sets exactly the destination sipgo would compute from the Via
// left on top, as the request's own source string, and only then.
func TestRelayTo_TheViaSipgoWouldFollow(t *testing.T) {
	cases := []struct {
		name, via, source string
		want              string // the response's Destination afterwards
	}{
		{"rport and received written by markReceived", "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1;rport=40000;received=192.0.2.1",
			"192.0.2.1:40000", "192.0.2.1:40000"},
		{"no rport, Via host is the source", "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1", "192.0.2.1:5070", "192.0.2.1:5070"},
		{"no port in Via: 5060", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1", "192.0.2.1:5060", "192.0.2.1:5060"},
		{"IPv6", "SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK-1;rport=40000;received=2001:db8::9",
			"[2001:db8::9]:40000", "[2001:db8::9]:40000"},
		{"Via elsewhere (no rport, NAT): sipgo's own", "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1;received=192.0.2.1",
			"192.0.2.1:40000", "192.0.2.1:5070"},
		{"rport elsewhere", "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1;rport=40001;received=192.0.2.1",
			"192.0.2.1:40000", "192.0.2.1:40001"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := parseResponse(t, "SIP/2.0 200 OK\r\nVia: "+tc.via+"\r\nFrom: <sip:a@example.com>;tag=a\r\n"+
				"To: <sip:b@example.com>;tag=b\r\nCall-ID: rd-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
			res.SetTransport("UDP")
			in := parseRequest(t, "INVITE sip:b@example.com SIP/2.0\r\nVia: "+tc.via+"\r\nFrom: <sip:a@example.com>;tag=a\r\n"+
				"To: <sip:b@example.com>\r\nCall-ID: rd-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
			in.SetSource(tc.source)
			relayTo(res, in)
			if got := res.Destination(); got != tc.want {
				t.Errorf("destination %q, want %q", got, tc.want)
			}
			if n := testing.AllocsPerRun(10, func() { _ = res.Destination() }); tc.want == tc.source && n != 0 {
				t.Errorf("Destination: %v allocations per send, want none (the source string)", n)
			}
		})
	}
}

// writeRendered sends what sipgo's WriteMsg sends, with fewer allocations.
func TestWriteRendered_AsWriteMsg(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	udp := &sip.UDPConnection{PacketConn: newUDPConn(pc, nil, DefaultMaxMessage)}
	res := parseResponse(t, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n"+
		"From: <sip:a@example.com>;tag=a\r\nTo: <sip:b@example.com>;tag=b\r\nCall-ID: wr-1\r\nCSeq: 1 INVITE\r\n"+
		"Contact: <sip:b@127.0.0.1:5080>\r\nContent-Length: 0\r\n\r\n")
	res.SetDestination(peer.LocalAddr().String())
	buf := make([]byte, 2048)
	recv := func() string {
		t.Helper()
		_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := peer.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	if err := udp.WriteMsg(res); err != nil {
		t.Fatal(err)
	}
	want := recv()
	if err := writeRendered(udp, res); err != nil {
		t.Fatal(err)
	}
	if got := recv(); got != want {
		t.Errorf("writeRendered sent\n%q\nWriteMsg sends\n%q", got, want)
	}
	ours := testing.AllocsPerRun(50, func() { _ = writeRendered(udp, res); recv() })
	sipgos := testing.AllocsPerRun(50, func() { _ = udp.WriteMsg(res); recv() })
	t.Logf("writeRendered %v allocations, WriteMsg %v", ours, sipgos)
	if ours > sipgos-2 && !raceEnabled { // under -race sync.Pool drops buffers on purpose
		t.Errorf("writeRendered: %v allocations, want at least 2 fewer than WriteMsg's %v", ours, sipgos)
	}
	big := parseResponse(t, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n"+
		"Call-ID: wr-2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
	big.SetBody(make([]byte, sip.UDPMTUSize))
	big.SetDestination(peer.LocalAddr().String())
	if err := writeRendered(udp, big); err != sip.ErrUDPMTUCongestion {
		t.Errorf("above the MTU: %v, want sip.ErrUDPMTUCongestion as WriteMsg", err)
	}
}
