package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
)

// listenTLS binds --tls-listen with the --tls-cert/--tls-key pair. With
// it the node registers its TLS address and transport tls, so sipedge
// reaches it over TLS.
func (n *node) listenTLS() error {
	if n.cfg.TLSListen == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(n.cfg.TLSCert, n.cfg.TLSKey)
	if err != nil {
		return fmt.Errorf("tls certificate %s: %w", n.cfg.TLSCert, err)
	}
	l, err := net.Listen("tcp", n.cfg.TLSListen)
	if err != nil {
		return fmt.Errorf("listen tls %s: %w", n.cfg.TLSListen, err)
	}
	n.tlsPort = l.Addr().(*net.TCPAddr).Port
	n.tls = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	return nil
}

func (c config) validateTLS() error {
	if c.TLSListen == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.TLSListen); err != nil {
		return fmt.Errorf("confnode: --tls-listen %q: want host:port", c.TLSListen)
	}
	if c.TLSCert == "" || c.TLSKey == "" {
		return errors.New("confnode: --tls-listen needs --tls-cert and --tls-key")
	}
	return nil
}

// registered is the address and transport written to the node hash: the
// TLS listener when there is one.
func (n *node) registered() (addr, transport string) {
	if n.tls != nil {
		return net.JoinHostPort(n.advHost, fmt.Sprint(n.tlsPort)), "tls"
	}
	return n.advertise(), "udp"
}
