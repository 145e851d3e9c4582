package integration

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Issue 10 item 5 (sipgo v1.7.3): a WebSocket client that connects and
// never completes its handshake does not hold up another client: while the
// first stays connected and silent (tcp_header_timeout is an hour, so
// sipedge keeps it), a second client's handshake completes and its call
// goes through. With the handshake in the accept loop (sipgo v1.7.2) the
// second handshake waits as long as the first client stays.
func TestWebSocket_StalledHandshakeDoesNotDelayTheNext(t *testing.T) {
	e := newEnv(t)
	node := e.startNode("n1")
	wsAddr := loopback(freePort(t))
	s := e.startSipedge("W", "--ws-listen", wsAddr, "--tcp-header-timeout", "1h", "--tcp-idle-timeout", "1h")
	s.waitRing(t, 5*time.Second, "n1")

	stalled, err := net.Dial("tcp", wsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := stalled.Write([]byte("GET / HTTP/1.1\r\nHost: " + wsAddr + "\r\n")); err != nil { // never finished
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the stalled client is accepted first

	// sipgo's own handshake deadline is 10 s: well within it the second
	// handshake must be done, or it waited for the stalled one.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wc, _, _, err := ws.Dialer{Protocols: []string{"sip"}}.Dial(ctx, "ws://"+wsAddr)
	if err != nil {
		t.Fatalf("WebSocket handshake while another client's is stalled: %v", err)
	}
	defer wc.Close()
	link := sipLink{addr: wc.LocalAddr().String(), tp: "WS",
		send: func(m string) error { return wsutil.WriteClientText(wc, []byte(m)) },
		recv: func() (string, error) {
			_ = wc.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, err := wsutil.ReadServerText(wc)
			return string(b), err
		}}
	link.call(t, wsAddr, "wsstall")
	if len(node.received(t, "BYE")) == 0 {
		t.Error("node got no BYE of the WebSocket call")
	}
	// The stalled client is still connected: nothing cut it to let the
	// second one in.
	_ = stalled.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := stalled.Read(make([]byte, 1)); err == nil || !isTimeout(err) {
		t.Errorf("the stalled client was closed (%v): the test proves nothing", err)
	}
}
