package integration

import (
	"net"
	"sync"
	"testing"
)

// rawUAS is a SIP peer on one UDP socket that counts the requests it
// reads per method and hands each to its handler (anything that is not a
// request, such as a 200 to its own BYE, is skipped). It stops with the
// test.
type rawUAS struct {
	conn   *net.UDPConn
	handle func(u *rawUAS, m rawRequest, src *net.UDPAddr)
	mu     sync.Mutex
	seen   map[string]int // method → requests read
	done   chan struct{}
}

func startRawUAS(t testing.TB, handle func(u *rawUAS, m rawRequest, src *net.UDPAddr)) *rawUAS {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("raw UAS: %v", err)
	}
	u := &rawUAS{conn: conn, handle: handle, seen: map[string]int{}, done: make(chan struct{})}
	go u.serve()
	t.Cleanup(func() { conn.Close(); <-u.done })
	return u
}

func (u *rawUAS) addr() string { return u.conn.LocalAddr().String() }

func (u *rawUAS) count(method string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[method]
}

func (u *rawUAS) serve() {
	defer close(u.done)
	buf := make([]byte, 65535)
	for {
		k, src, err := u.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m, ok := parseRawRequest(buf[:k])
		if !ok {
			continue
		}
		u.mu.Lock()
		u.seen[m.method]++
		u.mu.Unlock()
		u.handle(u, m, src)
	}
}
