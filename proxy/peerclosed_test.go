//go:build unix

package proxy

import (
	"net"
	"testing"
	"time"
)

// peerClosed tells a peer that closed its side from one still there,
// consumes nothing, and never waits for a reader blocked on the socket.
func TestPeerClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		peer   func(c net.Conn) // what the peer does before the check
		closed bool
	}{
		{"open, nothing sent", func(net.Conn) {}, false},
		{"open, a message unread", func(c net.Conn) { _, _ = c.Write([]byte("OPTIONS")) }, false},
		{"closed", func(c net.Conn) { c.Close() }, true},
		{"closed behind an unread message", func(c net.Conn) { _, _ = c.Write([]byte("BYE")); c.Close() }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			peer, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			c, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.name == "open, nothing sent" {
				go func() { var b [1]byte; _, _ = c.Read(b[:]) }() // a reader blocked on the socket
				time.Sleep(10 * time.Millisecond)
			}
			tc.peer(peer)
			time.Sleep(20 * time.Millisecond) // loopback: the bytes and the FIN are in
			done := make(chan bool, 1)
			go func() { done <- peerClosed(c) }()
			select {
			case got := <-done:
				if got != tc.closed {
					t.Fatalf("peerClosed = %v, want %v", got, tc.closed)
				}
			case <-time.After(time.Second):
				t.Fatal("peerClosed waited")
			}
			if tc.name == "open, a message unread" {
				b := make([]byte, 16)
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				if n, _ := c.Read(b); string(b[:n]) != "OPTIONS" {
					t.Fatalf("the message read after the peek is %q", b[:n])
				}
			}
		})
	}
}
