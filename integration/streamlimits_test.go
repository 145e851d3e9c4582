package integration

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// closedWithin reports how long until sipedge closed c, and whether it did
// before limit.
func closedWithin(c net.Conn, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return time.Since(start), err == nil || !(errors.As(err, &ne) && ne.Timeout())
}

// Issue 10 item 5: the TCP limits hold on the TLS and WebSocket listeners,
// below their handshakes. A client that opens a TLS (or WS) connection and
// sends nothing is closed at tcp_header_timeout, though tcp_idle_timeout
// is an hour; a source's connections over TCP, TLS and WS count together
// toward tcp_max_conns_per_source and the next one is refused; a TLS
// caller within the limits still completes its call.
func TestStreamLimits_TLSAndWebSocketListeners(t *testing.T) {
	e := newEnv(t)
	node := e.startNode("n1")
	cert, key := selfSigned(t, t.TempDir(), "edge.example")
	tlsAddr, wsAddr := loopback(freePort(t)), loopback(freePort(t))
	s := e.startSipedge("G", "--tls-listen", tlsAddr, "--ws-listen", wsAddr, "--tls-cert", cert, "--tls-key", key,
		"--tcp-header-timeout", "1s", "--tcp-idle-timeout", "1h", "--tcp-max-conns-per-source", "3")
	s.waitRing(t, 5*time.Second, "n1")

	for _, tc := range []struct{ name, addr string }{{"tls", tlsAddr}, {"ws", wsAddr}} {
		t.Run("silent "+tc.name+" client cut at the header timeout", func(t *testing.T) {
			c, err := net.Dial("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if d, closed := closedWithin(c, 8*time.Second); !closed || d < 800*time.Millisecond {
				t.Fatalf("closed=%v after %v; want closed at the 1s header timeout", closed, d)
			}
		})
	}
	t.Run("header_timeout closures counted", func(t *testing.T) {
		eventually(t, 3*time.Second, "header_timeout closures counted", func() string {
			if v := s.metricOr0(t, "sipedge_sip_tcp_closed_total", map[string]string{"reason": "header_timeout"}); v < 2 {
				return fmt.Sprintf("header_timeout closures %v, want 2", v)
			}
			return ""
		})
	})

	t.Run("per-source cap over TCP, TLS and WS", func(t *testing.T) {
		var open []net.Conn
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		for _, a := range []string{s.sipAddr(), tlsAddr} {
			c, err := net.Dial("tcp", a)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, c)
		}
		tc, err := tls.Dial("tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true}) // the third: handshakes
		if err != nil {
			t.Fatalf("third connection of the source: %v", err)
		}
		open = append(open, tc)
		// The 4th is closed at accept: its handshake fails, or its first
		// read sees the close (a read timeout would mean it was kept).
		over, err := tls.Dial("tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			_ = over.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err = over.Read(make([]byte, 1))
			over.Close()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the 4th TLS connection of one source was kept open")
			}
		}
		eventually(t, 3*time.Second, "per_source_limit closure counted", func() string {
			if v := s.metricOr0(t, "sipedge_sip_tcp_closed_total", map[string]string{"reason": "per_source_limit"}); v < 1 {
				return fmt.Sprintf("per_source_limit closures %v; want 1", v)
			}
			return ""
		})
	})

	t.Run("a TLS call within the limits", func(t *testing.T) {
		eventually(t, 5*time.Second, "the source's connections released", func() string {
			if v := s.metricOr0(t, "sipedge_sip_tcp_connections", nil); v != 0 {
				return fmt.Sprintf("%v open", v)
			}
			return ""
		})
		c, err := tls.Dial("tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		link := tlsLink(c)
		link.call(t, tlsAddr, "limconf")
		if len(node.received(t, "BYE")) == 0 {
			t.Error("node got no BYE of the TLS call")
		}
	})
}

// tlsLink is a sipLink over an established TLS connection.
func tlsLink(c *tls.Conn) sipLink {
	r := bufio.NewReader(c)
	return sipLink{addr: c.LocalAddr().String(), tp: "TLS",
		send: func(m string) error { _, err := io.WriteString(c, m); return err },
		recv: func() (string, error) {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			return readStreamMessage(r)
		}}
}
