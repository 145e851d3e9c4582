package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// frameConn hands out one prebuilt client frame per Read.
type frameConn struct {
	net.Conn
	frame []byte
}

func (c *frameConn) Read(b []byte) (int, error)      { return copy(b, c.frame), nil }
func (c *frameConn) SetReadDeadline(time.Time) error { return nil }

// BenchmarkGuardConn_ReadFrame: one Read of a 1 KB client frame through
// the WS guard, with ws_frame_timeout off (no frame tracking: the cost
// before it existed) and on (the frame headers followed).
func BenchmarkGuardConn_ReadFrame(b *testing.B) {
	frame := clientFrame(b, true, ws.OpText, make([]byte, 1024))
	for _, bc := range []struct {
		name  string
		bound time.Duration
	}{{"ws_frame_timeout=off", 0}, {"ws_frame_timeout=5s", 5 * time.Second}} {
		b.Run(bc.name, func(b *testing.B) {
			c := &guardConn{Conn: &frameConn{frame: frame}, upgraded: true,
				l: &guardListener{lim: tcpLimits{idleTimeout: DefaultTCPIdleTimeout, frameTimeout: bc.bound}}}
			buf := make([]byte, 4096)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
