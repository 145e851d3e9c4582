package proxy

import (
	"net"
	"time"
)

// udpReadyWait bounds how long Serve waits for sipgo to take the UDP
// listener before it starts accepting TCP.
const udpReadyWait = time.Second

// awaitUDPListener waits until sipgo's transport layer holds pc as its
// listener connection. ServeUDP registers it on its own goroutine just
// before reading; until then a request that came in over TCP and is
// forwarded over UDP from pc's address (out.Laddr, prepareForward) makes
// sipgo bind a new socket to that address: "address already in use", and
// the caller got 503 (TestProxy_TCPCallerUDPNode failed so under load).
func (p *Proxy) awaitUDPListener(pc net.PacketConn) {
	addr := pc.LocalAddr().String()
	deadline := time.Now().Add(udpReadyWait)
	for {
		if c, err := p.ua.TransportLayer().GetConnection("udp", addr); err == nil && c != nil {
			return
		}
		if time.Now().After(deadline) {
			p.log.Warn().Str("listen", addr).Msg("UDP listener not serving yet; accepting TCP anyway")
			return
		}
		time.Sleep(time.Millisecond)
	}
}
