// Package certs holds the TLS certificate sipedge presents on its TLS and
// WSS listeners, read from PEM files at start and again on SIGHUP: a
// renewed certificate (certbot, cert-manager) takes effect without a
// restart, and a bad new pair keeps the one in use.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync/atomic"
	"time"
)

// Store serves the current certificate to TLS handshakes.
type Store struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// Load reads the pair once; an error names the files.
func Load(certFile, keyFile string) (*Store, error) {
	s := &Store{certFile: certFile, keyFile: keyFile}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the files again; on error the certificate in use stays.
// It returns the new certificate's expiry.
func (s *Store) Reload() (time.Time, error) {
	c, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return time.Time{}, fmt.Errorf("load TLS certificate %s and key %s: %w", s.certFile, s.keyFile, err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return time.Time{}, fmt.Errorf("parse TLS certificate %s: %w", s.certFile, err)
	}
	c.Leaf = leaf
	s.cur.Store(&c)
	return leaf.NotAfter, nil
}

// Config is the server side tls.Config: TLS 1.2 or newer, the current
// certificate at each handshake.
func (s *Store) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cur.Load(), nil
		},
	}
}
