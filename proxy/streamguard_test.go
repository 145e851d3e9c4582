package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipedge/sipedge/ring"
)

func testServerTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// startSecureProxy serves TLS, WS and WSS with the given limits.
func startSecureProxy(t *testing.T, w WireOptions) *Proxy {
	t.Helper()
	px, err := New(Options{Listen: "127.0.0.1:0", RouteSecret: "s", UserAgent: "sipedge-test", Wire: w,
		Secure: SecureOptions{TLSListen: []ListenSpec{{Addr: "127.0.0.1:0"}}, WSListen: []ListenSpec{{Addr: "127.0.0.1:0"}},
			WSSListen: []ListenSpec{{Addr: "127.0.0.1:0"}}, TLS: testServerTLS(t)}},
		&fakeAdmitter{node: ring.Node{Name: "n1", Addr: "127.0.0.1:9", Transport: "udp"}}, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	serve(t, px)
	return px
}

// TestStreamGuard_SilentClientsCutWithinTheHeaderTimeout: on the TLS, WS
// and WSS listeners a client that connects and sends nothing (no TLS
// ClientHello, no HTTP upgrade), or trickles its upgrade request, is
// closed at the header timeout, not at the idle timeout.
func TestStreamGuard_SilentClientsCutWithinTheHeaderTimeout(t *testing.T) {
	px := startSecureProxy(t, WireOptions{TCPHeaderTimeout: 300 * time.Millisecond, TCPIdleTimeout: time.Hour})
	tlsAddr, wsAddr, wssAddr := px.SecureAddrs()
	for _, tc := range []struct{ name, addr, trickle string }{
		{"tls silent", tlsAddr, ""},
		{"ws silent", wsAddr, ""},
		{"wss silent", wssAddr, ""},
		{"ws trickled upgrade", wsAddr, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialTCP(t, tc.addr)
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				for i := 0; i < len(tc.trickle); i++ {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
					if _, err := c.Write([]byte{tc.trickle[i]}); err != nil {
						return
					}
				}
			}()
			if d, closed := readsEOFWithin(c, 5*time.Second); !closed || d < 250*time.Millisecond {
				t.Fatalf("closed=%v after %v; want closed at the 300ms header timeout", closed, d)
			}
		})
	}
	waitFor(t, func() bool {
		return testutil.ToFloat64(px.metrics.tcpClosed.WithLabelValues(tcpClosedHeaderTimeout)) >= 4
	}, "four header_timeout closures")
	waitFor(t, func() bool { return testutil.ToFloat64(px.metrics.tcpOpen) == 0 }, "connections released")
}

// TestStreamGuard_TLSClientStillServed: the limits leave a TLS client
// that handshakes and talks alone (OPTIONS to sipedge answered 200).
func TestStreamGuard_TLSClientStillServed(t *testing.T) {
	px := startSecureProxy(t, WireOptions{TCPHeaderTimeout: 2 * time.Second})
	tlsAddr, _, _ := px.SecureAddrs()
	c, err := tls.Dial("tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true}) // test certificate
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	opt := "OPTIONS sip:" + tlsAddr + " SIP/2.0\r\nVia: SIP/2.0/TLS " + c.LocalAddr().String() + ";branch=z9hG4bK-o1\r\n" +
		"From: <sip:a@example.com>;tag=a\r\nTo: <sip:" + tlsAddr + ">\r\nCall-ID: tls-opt-1\r\nCSeq: 1 OPTIONS\r\n" +
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(opt)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
		t.Fatalf("OPTIONS over TLS: %q %v", buf[:n], err)
	}
}

// TestStreamGuard_PerSourceCapOverEveryListener: tcp_max_conns_per_source
// counts a source's TCP, TLS, WS and WSS connections together.
func TestStreamGuard_PerSourceCapOverEveryListener(t *testing.T) {
	px := startSecureProxy(t, WireOptions{TCPMaxConnsPerSource: 3, TCPHeaderTimeout: time.Hour})
	tlsAddr, wsAddr, wssAddr := px.SecureAddrs()
	conns := []net.Conn{dialTCP(t, px.Addr()), dialTCP(t, tlsAddr), dialTCP(t, wsAddr)}
	waitFor(t, func() bool { return testutil.ToFloat64(px.metrics.tcpOpen) == 3 }, "three open")
	fourth := dialTCP(t, wssAddr)
	if _, closed := readsEOFWithin(fourth, 2*time.Second); !closed {
		t.Fatal("the 4th connection of one source (WSS) stayed open")
	}
	fifth := dialTCP(t, tlsAddr)
	if _, closed := readsEOFWithin(fifth, 2*time.Second); !closed {
		t.Fatal("the 5th connection of one source (TLS) stayed open")
	}
	// Counted just after the close the client saw.
	waitFor(t, func() bool { return testutil.ToFloat64(px.metrics.tcpClosed.WithLabelValues(tcpClosedPerSource)) == 2 },
		"two per_source_limit closures")
	conns[1].Close()
	waitFor(t, func() bool { return testutil.ToFloat64(px.metrics.tcpOpen) == 2 }, "a slot freed")
	again := dialTCP(t, tlsAddr)
	if _, closed := readsEOFWithin(again, 300*time.Millisecond); closed {
		t.Fatal("a TLS connection after one closed was refused")
	}
}

func TestGuardConn_SeesTheEndOfTheUpgradeAcrossReads(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		want   bool
	}{
		{"whole", []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, true},
		{"split in the blank line", []string{"GET / HTTP/1.1\r\nHost: x\r", "\n\r", "\n"}, true},
		{"byte by byte", strings.Split("GET / HTTP/1.1\r\n\r\n", ""), true},
		{"unfinished", []string{"GET / HTTP/1.1\r\n", "Host: x\r\n"}, false},
		{"CRLF pairs apart", []string{"a\r\n", "b\r\n"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &guardConn{}
			for _, ch := range tc.chunks {
				if !c.upgraded {
					c.sawHandshake([]byte(ch))
				}
			}
			if c.upgraded != tc.want {
				t.Errorf("upgraded %v, want %v", c.upgraded, tc.want)
			}
		})
	}
}
