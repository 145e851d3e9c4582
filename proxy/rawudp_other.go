//go:build !(linux && (amd64 || arm64))

package proxy

import (
	"errors"
	"net"
	"net/netip"
)

// rawUDP is Linux-only (rawudp_linux.go); elsewhere the net package's
// calls are used.
type rawUDP struct{}

func newRawUDP(net.PacketConn) *rawUDP { return nil }

var errNoRawUDP = errors.New("raw UDP is not available on this platform")

func (*rawUDP) readFrom([]byte) (int, net.Addr, error)       { return 0, nil, errNoRawUDP }
func (*rawUDP) writeTo([]byte, netip.AddrPort) (bool, error) { return false, nil }
