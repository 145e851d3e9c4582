package proxy

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/emiago/sipgo/sip"
)

// A listenAddr is one SIP listen address (UDP and TCP on one port) as
// messages name it: the host and port written into Via and Record-Route,
// and the UDP socket address requests over UDP leave from.
//
// The first address is Options.Listen (its fields stay on Proxy: advHost,
// advPort, udpLA, udp, tcp); Options.ListenExtra adds the others (RFC 3261
// §16.6: a proxy on several interfaces record-routes the one a request
// arrived on, and double record-routes when it leaves from another).
type listenAddr struct {
	host string
	port int
	la   sip.Addr // UDP local address (a TLS/WS listener: its TCP address)
	v6   bool
	tp   string // "": UDP and TCP; tls, ws, wss: a secure listener (secure.go)
	// bound is the IP of the socket when it is advertised by another name:
	// a URI naming that IP and the socket's port names the address too.
	bound string
}

// extraListener is a bound address of Options.ListenExtra.
type extraListener struct {
	listenAddr
	udp  net.PacketConn
	tcp  net.Listener
	udpw *udpConn
}

// firstAddr is the address of Options.Listen.
func (p *Proxy) firstAddr() listenAddr {
	return listenAddr{host: p.advHost, port: p.advPort, la: p.udpLA, v6: isV6Host(p.advHost)}
}

func isV6Host(h string) bool { return strings.Contains(h, ":") }

// listenExtra binds UDP and TCP on each address of Options.ListenExtra. An
// extra address names an IP (not a wildcard): it is written into messages
// as it is.
func (p *Proxy) listenExtra() error {
	for i, addr := range p.opts.ListenExtra {
		l, err := bindExtra(addr, p.opts.UDPBuffer)
		if err != nil {
			p.closeExtra()
			return err
		}
		if i < len(p.opts.ExtraAdvertise) && p.opts.ExtraAdvertise[i] != "" {
			l.bound = l.host
			l.host, l.port = advertised(p.opts.ExtraAdvertise[i], l.udp.LocalAddr().(*net.UDPAddr))
			l.host = strings.Trim(l.host, "[]")
		}
		if l.host == p.advHost && l.port == p.advPort || p.extraNamed(l.host, l.port) >= 0 {
			l.udp.Close()
			l.tcp.Close()
			p.closeExtra()
			return fmt.Errorf("proxy: listen %s: address listed twice", addr)
		}
		p.extra = append(p.extra, l)
	}
	return nil
}

func bindExtra(addr string, buffer int) (extraListener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return extraListener{}, fmt.Errorf("proxy: listen %s: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return extraListener{}, fmt.Errorf("proxy: listen %s: an extra listen address must be an IP address, not a wildcard or a name", addr)
	}
	for attempt := 1; ; attempt++ {
		l, err := bindExtraOnce(addr, buffer)
		if err == nil || port != "0" || attempt == 5 || !errors.Is(err, syscall.EADDRINUSE) {
			return l, err
		}
	}
}

func bindExtraOnce(addr string, buffer int) (extraListener, error) {
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		return extraListener{}, fmt.Errorf("proxy: listen udp %s: %w", addr, err)
	}
	if uc, ok := udp.(*net.UDPConn); ok && buffer > 0 {
		_ = uc.SetReadBuffer(buffer)
		_ = uc.SetWriteBuffer(buffer)
	}
	ua := udp.LocalAddr().(*net.UDPAddr)
	tcp, err := net.Listen("tcp", net.JoinHostPort(ua.IP.String(), strconv.Itoa(ua.Port)))
	if err != nil {
		udp.Close()
		return extraListener{}, fmt.Errorf("proxy: listen tcp %s: %w", addr, err)
	}
	host := ua.IP.String()
	return extraListener{listenAddr: listenAddr{host: host, port: ua.Port, la: sip.Addr{IP: ua.IP, Port: ua.Port},
		v6: ua.IP.To4() == nil}, udp: udp, tcp: tcp}, nil
}

// wireExtra puts the same limits on the extra listeners as on the first.
func (p *Proxy) wireExtra(lim tcpLimits) {
	for i := range p.extra {
		l := &p.extra[i]
		l.udpw = newUDPConn(l.udp, p, lim.maxMessage)
		l.udp = l.udpw
		l.tcp = newLimitListener(l.tcp, p, lim)
	}
}

// serveExtra starts sipgo on the extra listeners (two goroutines each
// report to errc) and returns their addresses.
func (p *Proxy) serveExtra(errc chan<- error) []string {
	names := make([]string, 0, len(p.extra))
	for i := range p.extra {
		l := &p.extra[i]
		p.serveOn(p.background(), errc, func() error { return p.srv.ServeUDP(l.udp) })
		p.awaitUDPListener(l.udp) // as for the first address (ready.go)
		p.serveOn(p.background(), errc, func() error { return p.srv.ServeTCP(l.tcp) })
		names = append(names, net.JoinHostPort(l.host, strconv.Itoa(l.port)))
	}
	return names
}

func (p *Proxy) closeExtra() {
	for _, l := range p.extra {
		if l.udp != nil {
			l.udp.Close()
		}
		if l.tcp != nil {
			l.tcp.Close()
		}
	}
}

// ListenAddrs are the advertised HOST:PORT of every listen address, the
// first one (Addr) first.
func (p *Proxy) ListenAddrs() []string {
	out := []string{p.Addr()}
	for _, l := range p.extra {
		out = append(out, net.JoinHostPort(l.host, strconv.Itoa(l.port)))
	}
	return out
}

// extraNamed is the index of the extra address host:port, or -1.
func (p *Proxy) extraNamed(host string, port int) int {
	host = strings.Trim(host, "[]")
	for i := range p.extra {
		l := &p.extra[i]
		if l.port == port && l.host == host || l.bound != "" && l.la.Port == port && l.bound == host {
			return i
		}
	}
	return -1
}

// isOurs reports whether host:port (port 0: 5060) is one of the listen
// addresses, as Via, Route and Request-URI name them.
func (p *Proxy) isOurs(host string, port int) bool {
	if port == 0 {
		port = 5060
	}
	if strings.Trim(host, "[]") == strings.Trim(p.advHost, "[]") && port == p.advPort {
		return true
	}
	return len(p.extra) > 0 && p.extraNamed(host, port) >= 0
}

// addrNamed is the listen address a URI names, if it names one.
func (p *Proxy) addrNamed(u *sip.Uri) (listenAddr, bool) {
	port := u.Port
	if port == 0 {
		port = 5060
	}
	if strings.Trim(u.Host, "[]") == strings.Trim(p.advHost, "[]") && port == p.advPort {
		return p.firstAddr(), true
	}
	if i := p.extraNamed(u.Host, port); i >= 0 {
		return p.extra[i].listenAddr, true
	}
	if len(p.secure) > 0 {
		return p.secureNamed(u.Host, port)
	}
	return listenAddr{}, false
}

// addrFacing is the first listen address of the family of addr (an
// IP:port), else def.
func (p *Proxy) addrFacing(addr string, def listenAddr) listenAddr {
	v6 := destIsV6(addr)
	if def.v6 == v6 {
		return def
	}
	if first := p.firstAddr(); first.v6 == v6 {
		return first
	}
	for _, l := range p.extra {
		if l.v6 == v6 {
			return l.listenAddr
		}
	}
	return def
}

func destIsV6(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return isV6Host(strings.Trim(host, "[]"))
}

// arrivedOn is the listen address a request came to: the one its top
// Route names (an in-dialog request), else the one its Request-URI names
// (an initial request), else the first of its sender's family.
func (p *Proxy) arrivedOn(in *sip.Request) listenAddr {
	if len(p.secure) > 0 {
		if tp := lower(in.Transport()); isSecureTP(tp) {
			return p.arrivedOnSecure(in, tp)
		}
	}
	if len(p.extra) == 0 {
		return p.firstAddr()
	}
	if rh := in.Route(); rh != nil {
		if a, ok := p.addrNamed(&rh.Address); ok {
			return a
		}
	}
	if a, ok := p.addrNamed(&in.Recipient); ok {
		return a
	}
	return p.addrFacing(in.Source(), p.firstAddr())
}

// sendsFrom is the listen address a request relayed to next leaves from
// and names in its Via: the one the dialog's second sipedge Route names
// (the side next knows, after a double Record-Route), else the one it
// arrived on, if of next's family; else the first of next's family. Over
// TLS or a WebSocket the Via names that listener, when there is one.
func (p *Proxy) sendsFrom(in *sip.Request, next hop) listenAddr {
	return p.onTransport(p.sendsFromAddr(in, next.addr), next.transport)
}

// onTransport is the listen address for transport near a (the same IP,
// else the same family): over TLS or a WebSocket one of those listeners,
// when there is one; over UDP or TCP one of the UDP/TCP addresses.
func (p *Proxy) onTransport(a listenAddr, transport string) listenAddr {
	switch transport {
	case "udp", "tcp", "UDP", "TCP":
		if a.tp != "" {
			return p.plainFor(a)
		}
		return a
	}
	tp := lower(transport)
	if a.tp == tp {
		return a
	}
	if s, ok := p.secureFor(tp, a); ok {
		return s
	}
	return a
}

// plainFor is the UDP/TCP listen address near the secure listener a: the
// one on its IP, else the first of its family, else the first.
func (p *Proxy) plainFor(a listenAddr) listenAddr {
	first := p.firstAddr()
	if first.la.IP.Equal(a.la.IP) {
		return first
	}
	for _, l := range p.extra {
		if l.la.IP.Equal(a.la.IP) {
			return l.listenAddr
		}
	}
	if first.v6 == a.v6 {
		return first
	}
	for _, l := range p.extra {
		if l.v6 == a.v6 {
			return l.listenAddr
		}
	}
	return first
}

// arrivedOnSecure is the listener of transport tp a request came over: the
// one its top Route names, else the one its Request-URI names, else the
// first of tp near the address arrivedOn gives for UDP.
func (p *Proxy) arrivedOnSecure(in *sip.Request, tp string) listenAddr {
	named := func(u *sip.Uri) (listenAddr, bool) {
		port := u.Port
		if port == 0 {
			port = sip.DefaultPort(tp) // 5061, 80, 443
		}
		a, ok := p.secureNamed(u.Host, port)
		return a, ok && a.tp == tp
	}
	if rh := in.Route(); rh != nil {
		if a, ok := named(&rh.Address); ok {
			return a
		}
	}
	if a, ok := named(&in.Recipient); ok {
		return a
	}
	near := p.addrFacing(in.Source(), p.firstAddr())
	if a, ok := p.secureFor(tp, listenAddr{v6: near.v6}); ok {
		return a
	}
	return near
}

func (p *Proxy) sendsFromAddr(in *sip.Request, dest string) listenAddr {
	if len(p.extra) == 0 && len(p.secure) <= 1 {
		return p.firstAddr()
	}
	from := p.arrivedOn(in)
	n := 0
	for _, h := range in.Headers() {
		rh, ok := h.(*sip.RouteHeader)
		if !ok {
			continue
		}
		if n++; n == 2 {
			if _, stateful := rh.Address.UriParams.Get(routeParam); stateful {
				if a, ok := p.addrNamed(&rh.Address); ok {
					from = a
				}
			}
			break
		}
	}
	return p.addrFacing(dest, from)
}
