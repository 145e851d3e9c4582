package app

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/sipedge/sipedge/internal/config"
)

// nodeTLSConfig is the client TLS configuration sipedge dials nodes with
// when their record says transport tls: verified against node_tls_ca (or
// the system roots), the node address's IP or name as the server name.
// With node_tls_ca the pool is the one ca holds, which a SIGHUP re-reads
// (ca is nil without node_tls_ca).
func nodeTLSConfig(cfg config.Config) (conf *tls.Config, ca *nodeCA, err error) {
	conf = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.NodeTLSVerify == "off" {
		conf.InsecureSkipVerify = true // node_tls_verify: off, documented as for tests only
	}
	if cfg.NodeTLSCA == "" {
		return conf, nil, nil
	}
	ca = &nodeCA{path: cfg.NodeTLSCA}
	if _, err := ca.Reload(); err != nil {
		return nil, nil, &config.FieldError{Field: "node_tls_ca", Value: cfg.NodeTLSCA, Err: errors.Unwrap(err)}
	}
	if conf.InsecureSkipVerify {
		return conf, ca, nil
	}
	// crypto/tls verifies against a fixed RootCAs; verifying here instead,
	// with the same options, lets a SIGHUP swap the pool for new connections.
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = ca.verify
	return conf, ca, nil
}

// nodeCA is the CA pool of node_tls_ca; Reload replaces it, a bad file
// keeps the one in use.
type nodeCA struct {
	path string
	pool atomic.Pointer[x509.CertPool]
}

var errNoPEM = errors.New("no PEM certificate in the file")

// Reload reads the file again and returns how many certificates it holds.
func (c *nodeCA) Reload() (int, error) {
	data, err := os.ReadFile(c.path)
	if err != nil {
		return 0, fmt.Errorf("node_tls_ca %s: %w", c.path, errors.Unwrap(err))
	}
	pool, n := x509.NewCertPool(), 0
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil && block.Type == "CERTIFICATE" {
			pool.AddCert(cert)
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("node_tls_ca %s: %w", c.path, errNoPEM)
	}
	c.pool.Store(pool)
	return n, nil
}

// verify is what crypto/tls does with RootCAs set: the chain the node
// sent, up to the current pool, for the name or IP it was dialled by.
func (c *nodeCA) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: node sent no certificate")
	}
	if cs.ServerName == "" { // crypto/tls refuses to dial so too
		return errors.New("tls: no node name or IP to verify its certificate for")
	}
	opts := x509.VerifyOptions{Roots: c.pool.Load(), DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
	for _, ic := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(ic)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}
