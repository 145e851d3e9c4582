package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// A ListenSpec is one listen address and, optionally, the HOST[:PORT]
// messages name it by (Kamailio's `listen=... advertise HOST:PORT`: a
// public name or the address a NAT forwards to it).
type ListenSpec struct {
	Addr      string // HOST:PORT to bind
	Advertise string // HOST or HOST:PORT for Via and Record-Route ("": derived)
}

// SecureOptions are the endpoint listeners besides UDP and TCP: SIP over
// TLS, WebSocket and secure WebSocket (sipgo's transports), each on any
// number of addresses (none: off). TLS and WSS need TLS (certificate from
// internal/certs).
type SecureOptions struct {
	TLSListen, WSListen, WSSListen []ListenSpec
	TLS                            *tls.Config
	// NodeTLS dials nodes whose record says transport tls (nil: sipgo's
	// default, the system roots).
	NodeTLS *tls.Config
	// NodeTLSClient, when set, makes every TLS and WSS connection dialled
	// toward a node instead of NodeTLS (nodetls.go): node_tls_ca swapped
	// at run time.
	NodeTLSClient NodeTLSClient
}

// secureListener is one bound TLS, WS or WSS listener; its listenAddr (tp
// set) is what Record-Route and Via name for messages over it.
type secureListener struct {
	listenAddr
	l net.Listener
}

// secureListeners are the TLS, WS and WSS listeners in the order of the options.
type secureListeners []secureListener

func isSecureTP(tp string) bool { return tp == "tls" || tp == "ws" || tp == "wss" }

// listenSecure binds the TLS, WS and WSS listeners (start-up fails on a
// bad or busy address).
func (p *Proxy) listenSecure() error {
	o := p.opts.Secure
	for _, set := range []struct {
		tp    string
		specs []ListenSpec
		conf  *tls.Config
	}{{"tls", o.TLSListen, o.TLS}, {"ws", o.WSListen, nil}, {"wss", o.WSSListen, o.TLS}} {
		for _, spec := range set.specs {
			if spec.Addr == "" {
				continue
			}
			l, err := net.Listen("tcp", spec.Addr)
			if err != nil {
				p.closeSecure()
				return fmt.Errorf("proxy: listen %s %s: %w", set.tp, spec.Addr, err)
			}
			ta := l.Addr().(*net.TCPAddr)
			a := p.secureAddr(set.tp, spec.Advertise, ta)
			if set.conf != nil {
				l = tls.NewListener(l, set.conf)
			}
			p.secure = append(p.secure, secureListener{listenAddr: a, l: l})
		}
	}
	return nil
}

// secureAddr is what messages name a listener bound to ta by: its
// advertise; else, on the first listen address's IP or a wildcard, that
// address's advertised host; else its IP.
func (p *Proxy) secureAddr(tp, adv string, ta *net.TCPAddr) listenAddr {
	a := listenAddr{tp: tp, port: ta.Port, la: sip.Addr{IP: ta.IP, Port: ta.Port}, v6: ta.IP.To4() == nil}
	switch {
	case adv != "":
		a.host, a.port = advertised(adv, &net.UDPAddr{IP: ta.IP, Port: ta.Port})
	case ta.IP.IsUnspecified() || ta.IP.Equal(p.udpLA.IP):
		a.host = p.advHost
		a.v6 = isV6Host(p.advHost)
	default:
		a.host = ta.IP.String()
	}
	if h := ta.IP.String(); h != a.host && !ta.IP.IsUnspecified() {
		a.bound = h
	}
	return a
}

// serveSecure starts sipgo on the bound listeners.
func (p *Proxy) serveSecure(errc chan<- error) (names []string) {
	for i := range p.secure {
		s := &p.secure[i]
		switch s.tp {
		case "tls":
			p.serveOn(p.background(), errc, func() error { return p.srv.ServeTLS(s.l) })
		case "ws":
			p.serveOn(p.background(), errc, func() error { return p.srv.ServeWS(s.l) })
		case "wss":
			p.serveOn(p.background(), errc, func() error { return p.srv.ServeWSS(s.l) })
		}
		names = append(names, s.tp+" "+s.l.Addr().String()+" as "+net.JoinHostPort(s.host, strconv.Itoa(s.port)))
	}
	return names
}

func (p *Proxy) closeSecure() {
	for _, s := range p.secure {
		if s.l != nil {
			s.l.Close()
		}
	}
}

// secureFor is the listener of transport tp (tls, ws, wss) that messages
// leaving over it from near a name: the one on a's IP, else the first of
// a's family, else the first.
func (p *Proxy) secureFor(tp string, a listenAddr) (listenAddr, bool) {
	var family, first *listenAddr
	for i := range p.secure {
		s := &p.secure[i].listenAddr
		if s.tp != tp {
			continue
		}
		if a.la.IP != nil && s.la.IP.Equal(a.la.IP) {
			return *s, true
		}
		if family == nil && s.v6 == a.v6 {
			family = s
		}
		if first == nil {
			first = s
		}
	}
	switch {
	case family != nil:
		return *family, true
	case first != nil:
		return *first, true
	}
	return listenAddr{}, false
}

// secureNamed is the TLS, WS or WSS listener host:port names, if any.
func (p *Proxy) secureNamed(host string, port int) (listenAddr, bool) {
	host = strings.Trim(host, "[]")
	for _, s := range p.secure {
		if s.port == port && strings.Trim(s.host, "[]") == host || s.bound != "" && s.la.Port == port && s.bound == host {
			return s.listenAddr, true
		}
	}
	return listenAddr{}, false
}

// SecureAddrs are the advertised addresses of the first TLS, WS and WSS
// listeners ("" when off).
func (p *Proxy) SecureAddrs() (tlsAddr, ws, wss string) {
	first := func(tp string) string {
		for _, s := range p.secure {
			if s.tp == tp {
				return net.JoinHostPort(s.host, strconv.Itoa(s.port))
			}
		}
		return ""
	}
	return first("tls"), first("ws"), first("wss")
}

// ErrNodeTransport is why a node whose record names a transport sipedge
// cannot use toward it fails its probes (and so is never chosen).
var ErrNodeTransport = errors.New("node transport unusable")

// nodeTransportOK reports whether sipedge can carry a dialog to a node
// over transport: TLS, WS and WSS need sipedge's own listener of that
// transport, which the Record-Route toward the node names for the node's
// in-dialog requests (sipedge dials the node; the node dials it back).
func (p *Proxy) nodeTransportOK(transport string) error {
	switch transport {
	case "udp", "tcp":
		return nil
	case "tls", "ws", "wss":
		if _, ok := p.secureFor(transport, listenAddr{}); !ok {
			return fmt.Errorf("%w: transport %s needs %s_listen (the node's in-dialog requests come back to it)", ErrNodeTransport, transport, transport)
		}
		return nil
	}
	return fmt.Errorf("%w: transport %s toward nodes is not supported (use udp, tcp, tls, ws or wss)", ErrNodeTransport, transport)
}
