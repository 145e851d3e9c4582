package proxy

import "net"

// srcAddr is the source address of a datagram the raw UDP reader hands to
// sipgo: a *net.UDPAddr with its String form made once. sipgo turns the
// source of every datagram it reads into a string (net.UDPAddr.String:
// two allocations) and the reader would allocate the address itself (one
// or two); a source seen again gets the same srcAddr back
// (rawudp_linux.go srcCache), so neither happens per message.
//
// A srcAddr is shared by every message from that source and is never
// changed once made; readers that need the *net.UDPAddr take it with
// udpAddrOf.
type srcAddr struct {
	net.UDPAddr
	ip [16]byte // the storage of UDPAddr.IP
	s  string
}

func (a *srcAddr) String() string { return a.s }

var _ net.Addr = (*srcAddr)(nil)

// newSrcAddr copies ip (4 or 16 bytes) into a new srcAddr.
func newSrcAddr(ip []byte, port int, zone string) *srcAddr {
	a := &srcAddr{}
	n := copy(a.ip[:], ip)
	a.UDPAddr = net.UDPAddr{IP: a.ip[:n:n], Port: port, Zone: zone}
	a.s = a.UDPAddr.String()
	return a
}

// udpAddrOf is the *net.UDPAddr behind a datagram's source address, as the
// net package or the raw reader gave it.
func udpAddrOf(a net.Addr) (*net.UDPAddr, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a, a != nil
	case *srcAddr:
		if a == nil {
			return nil, false
		}
		return &a.UDPAddr, true
	}
	return nil, false
}

// plainAddr is a as the net package's calls take it: a source address
// only as a *net.UDPAddr.
func plainAddr(a net.Addr) net.Addr {
	if ua, ok := udpAddrOf(a); ok {
		return ua
	}
	return a
}
