//go:build linux && (amd64 || arm64)

package proxy

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestRawUDP_SendsAndReceivesAsTheNetPackageDoes(t *testing.T) {
	cases := []struct {
		name        string
		listen      string // the socket driven raw
		peer        string // a plain net socket on the other end
		wantFromLen int    // length of the source IP readFrom reports (the net package's shape)
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0", 4},
		{"ipv6", "[::1]:0", "[::1]:0", 16},
		{"ipv4 peer of a dual-stack socket", "[::]:0", "127.0.0.1:0", 16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pc, err := net.ListenPacket("udp", tc.listen)
			if err != nil {
				t.Skipf("listen %s: %v", tc.listen, err)
			}
			defer pc.Close()
			peer, err := net.ListenPacket("udp", tc.peer)
			if err != nil {
				t.Skipf("listen %s: %v", tc.peer, err)
			}
			defer peer.Close()
			r := newRawUDP(pc)
			if r == nil {
				t.Fatal("newRawUDP refused a UDP socket")
			}
			port := pc.LocalAddr().(*net.UDPAddr).Port
			to := net.UDPAddr{IP: peer.LocalAddr().(*net.UDPAddr).IP, Port: port}
			if to.IP.IsUnspecified() {
				to.IP = net.IPv4(127, 0, 0, 1)
			}
			if _, err := peer.WriteTo([]byte("OPTIONS sip:x SIP/2.0\r\n\r\n"), &to); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			n, from, err := r.readFrom(buf)
			if err != nil {
				t.Fatalf("readFrom: %v", err)
			}
			if got := string(buf[:n]); got != "OPTIONS sip:x SIP/2.0\r\n\r\n" {
				t.Errorf("read %q", got)
			}
			ua, ok := udpAddrOf(from)
			if !ok {
				t.Fatalf("from = %T, not a UDP address", from)
			}
			want := peer.LocalAddr().(*net.UDPAddr)
			if from.String() != ua.String() || from.Network() != "udp" {
				t.Errorf("from prints %s/%q, its UDP address %q", from.Network(), from.String(), ua.String())
			}
			if ua.Port != want.Port || !ua.IP.Equal(want.IP) || len(ua.IP) != tc.wantFromLen {
				t.Errorf("from = %v (%d-byte IP), want %v (%d bytes)", ua, len(ua.IP), want, tc.wantFromLen)
			}

			done, err := r.writeTo([]byte("SIP/2.0 200 OK\r\n\r\n"), ua.AddrPort())
			if !done || err != nil {
				t.Fatalf("writeTo = %v, %v", done, err)
			}
			peer.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, back, err := peer.ReadFrom(buf)
			if err != nil {
				t.Fatalf("the peer read nothing: %v", err)
			}
			if string(buf[:n]) != "SIP/2.0 200 OK\r\n\r\n" || back.(*net.UDPAddr).Port != port {
				t.Errorf("peer read %q from %v", buf[:n], back)
			}
		})
	}
}

// A source seen again is handed to sipgo as the same address, made once:
// sipgo's read loop prints every datagram's source, and the reader would
// allocate it per datagram. Sources that share a slot replace each other
// and stay correct.
func TestRawUDP_SourceAddressMadeOncePerSource(t *testing.T) {
	pc, err := net.ListenPacket("udp", "[::]:0")
	if err != nil {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
	}
	defer pc.Close()
	r := newRawUDP(pc)
	if r == nil {
		t.Fatal("newRawUDP refused a UDP socket")
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	var peers []net.PacketConn
	for i := 0; i < 300; i++ { // more sources than slots
		peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		peers = append(peers, peer)
	}
	buf := make([]byte, 100)
	read := func(peer net.PacketConn) net.Addr {
		t.Helper()
		if _, err := peer.WriteTo([]byte("OPTIONS sip:x SIP/2.0\r\n\r\n"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err != nil {
			t.Fatal(err)
		}
		_, from, err := r.readFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		want := peer.LocalAddr().(*net.UDPAddr)
		ua, ok := udpAddrOf(from)
		if !ok || ua.Port != want.Port || !ua.IP.Equal(want.IP) {
			t.Fatalf("from = %v, want %v", from, want)
		}
		if from.String() != want.String() {
			t.Fatalf("from prints %q, its UDP address %q", from, ua)
		}
		return from
	}
	first := read(peers[0])
	if again := read(peers[0]); again != first {
		t.Errorf("the same source read twice gave two addresses (%p, %p)", first, again)
	}
	for _, peer := range peers {
		read(peer)
	}
	read(peers[0])
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	msg := []byte("OPTIONS sip:x SIP/2.0\r\n\r\n")
	known := read(peers[0])
	uc := peers[0].(*net.UDPConn)
	if n := testing.AllocsPerRun(50, func() {
		if _, err := uc.WriteToUDPAddrPort(msg, to); err != nil {
			t.Fatal(err)
		}
		if _, from, err := r.readFrom(buf); err != nil || from != known {
			t.Fatalf("readFrom = %v, %v; want %v", from, err, known)
		}
	}); n != 0 {
		t.Errorf("reading from a known source: %v allocations, want 0", n)
	}
}

func TestRawUDP_DeclinesWhatItCannotSend(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r := newRawUDP(pc)
	for _, to := range []string{"[::1]:5060", "[fe80::1%lo]:5060"} {
		if done, err := r.writeTo([]byte("x"), netip.MustParseAddrPort(to)); done || err != nil {
			t.Errorf("writeTo %s from an IPv4 socket = %v, %v; want declined (the net package answers)", to, done, err)
		}
	}
}

func TestUDPConn_ClosedListenerEndsTheReadLoop(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := newUDPConn(pc, nil, DefaultMaxMessage)
	if c.raw == nil {
		t.Fatal("no raw path on a UDP socket")
	}
	errc := make(chan error, 1)
	go func() { _, _, err := c.ReadFrom(make([]byte, 100)); errc <- err }()
	time.Sleep(50 * time.Millisecond) // let it wait in the netpoller
	c.Close()
	select {
	case err := <-errc:
		// sipgo's read loop stops quietly only on net.ErrClosed.
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("read after close: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a read waiting on a closed listener did not return")
	}
	if _, err := c.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v, want net.ErrClosed", err)
	}
}

// BenchmarkUDPWrite: one SIP-sized datagram to a loopback socket nobody
// drains (the kernel drops it once the buffer is full; the send costs the
// same), through the listener wrapper's raw path and through net's.
func BenchmarkUDPWrite(b *testing.B) {
	sink, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	to := sink.LocalAddr().(*net.UDPAddr)
	msg := make([]byte, 600)
	for _, raw := range []bool{true, false} {
		name := map[bool]string{true: "raw", false: "net"}[raw]
		b.Run(name, func(b *testing.B) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer pc.Close()
			c := newUDPConn(pc, nil, DefaultMaxMessage)
			if !raw {
				c.raw = nil
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.WriteTo(msg, to); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The stateless answers and the raw ACK write through udpAt: it must give
// the listener as sipgo reads it, whose writes are raw, not the net socket
// under it (whose sendto enters the runtime's syscall state).
func TestUDPAt_GivesTheRawListenerOfTheAddress(t *testing.T) {
	listen := func() (net.PacketConn, *udpConn) {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		return pc, newUDPConn(pc, nil, 0)
	}
	first, firstW := listen()
	second, secondW := listen()
	p := &Proxy{udpw: firstW, extra: []extraListener{{udp: second, udpw: secondW}}}
	for _, tc := range []struct {
		name  string
		local net.Addr
		want  *udpConn
	}{
		{"the first listen address", first.LocalAddr(), firstW},
		{"an extra listen address", second.LocalAddr(), secondW},
		{"an address not known", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 9}, firstW},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := p.udpAt(tc.local).(*udpConn)
			if !ok || got != tc.want {
				t.Fatalf("udpAt(%v) = %T %p, want the listener's *udpConn %p", tc.local, p.udpAt(tc.local), got, tc.want)
			}
			if got.raw == nil {
				t.Fatal("the listener has no raw writer")
			}
		})
	}
}
