package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
)

// SecureOptions are the endpoint listeners besides UDP and TCP: SIP over
// TLS, WebSocket and secure WebSocket (sipgo's transports). Empty
// addresses are off; TLS and WSS need TLS (certificate from internal/certs).
type SecureOptions struct {
	TLSListen, WSListen, WSSListen string
	TLS                            *tls.Config
	// NodeTLS dials nodes whose record says transport tls (nil: sipgo's
	// default, the system roots).
	NodeTLS *tls.Config
}

// secureListeners are the bound TLS/WS/WSS listeners and their ports,
// which Record-Route names for requests that arrived over them.
type secureListeners struct {
	tls, ws, wss             net.Listener
	tlsPort, wsPort, wssPort int
}

// listenSecure binds the TLS, WS and WSS listeners (start-up fails on a
// bad or busy address).
func (p *Proxy) listenSecure() error {
	o := p.opts.Secure
	bind := func(addr string, conf *tls.Config, what string) (net.Listener, int, error) {
		if addr == "" {
			return nil, 0, nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, 0, fmt.Errorf("proxy: listen %s %s: %w", what, addr, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if conf != nil {
			l = tls.NewListener(l, conf)
		}
		return l, port, nil
	}
	var err error
	s := &p.secure
	if s.tls, s.tlsPort, err = bind(o.TLSListen, o.TLS, "tls"); err != nil {
		return err
	}
	if s.ws, s.wsPort, err = bind(o.WSListen, nil, "ws"); err != nil {
		p.closeSecure()
		return err
	}
	if s.wss, s.wssPort, err = bind(o.WSSListen, o.TLS, "wss"); err != nil {
		p.closeSecure()
		return err
	}
	return nil
}

// serveSecure starts sipgo on the bound listeners.
func (p *Proxy) serveSecure(errc chan<- error) (names []string) {
	s := &p.secure
	if s.tls != nil {
		p.serveOn(p.background(), errc, func() error { return p.srv.ServeTLS(s.tls) })
		names = append(names, "tls "+s.tls.Addr().String())
	}
	if s.ws != nil {
		p.serveOn(p.background(), errc, func() error { return p.srv.ServeWS(s.ws) })
		names = append(names, "ws "+s.ws.Addr().String())
	}
	if s.wss != nil {
		p.serveOn(p.background(), errc, func() error { return p.srv.ServeWSS(s.wss) })
		names = append(names, "wss "+s.wss.Addr().String())
	}
	return names
}

func (p *Proxy) closeSecure() {
	for _, l := range []net.Listener{p.secure.tls, p.secure.ws, p.secure.wss} {
		if l != nil {
			l.Close()
		}
	}
}

// portFor is the port Record-Route names for transport: requests that
// came over TLS or a WebSocket are routed back to that listener.
func (p *Proxy) portFor(transport string) int {
	switch transport {
	case "tls":
		if p.secure.tlsPort != 0 {
			return p.secure.tlsPort
		}
	case "ws":
		if p.secure.wsPort != 0 {
			return p.secure.wsPort
		}
	case "wss":
		if p.secure.wssPort != 0 {
			return p.secure.wssPort
		}
	}
	return p.advPort
}

// SecureAddrs are the bound TLS, WS and WSS addresses ("" when off).
func (p *Proxy) SecureAddrs() (tlsAddr, ws, wss string) {
	addr := func(l net.Listener, port int) string {
		if l == nil {
			return ""
		}
		return net.JoinHostPort(p.advHost, strconv.Itoa(port))
	}
	return addr(p.secure.tls, p.secure.tlsPort), addr(p.secure.ws, p.secure.wsPort), addr(p.secure.wss, p.secure.wssPort)
}

// ErrNodeTransport is why a node whose record names a transport sipedge
// cannot use toward it fails its probes (and so is never chosen).
var ErrNodeTransport = errors.New("node transport unusable")

// nodeTransportOK reports whether sipedge can carry a dialog to a node
// over transport: TLS needs sipedge's own TLS listener, which the
// Record-Route toward the node names for the node's in-dialog requests;
// WebSocket toward nodes is not supported.
func (p *Proxy) nodeTransportOK(transport string) error {
	switch transport {
	case "udp", "tcp":
		return nil
	case "tls":
		if p.secure.tls == nil {
			return fmt.Errorf("%w: transport tls needs tls_listen (the node's in-dialog requests come back to it)", ErrNodeTransport)
		}
		return nil
	}
	return fmt.Errorf("%w: transport %s toward nodes is not supported (use udp, tcp or tls)", ErrNodeTransport, transport)
}
