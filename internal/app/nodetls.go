package app

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/sipedge/sipedge/internal/config"
)

// nodeTLSConfig is the client TLS configuration sipedge dials nodes with
// when their record says transport tls or wss: verified against
// node_tls_ca (or the system roots), the node address's IP or name as the
// server name (crypto/tls's own check). ca, nil without node_tls_ca,
// re-reads the file on SIGHUP.
func nodeTLSConfig(cfg config.Config) (conf *tls.Config, ca *nodeCA, err error) {
	conf = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.NodeTLSVerify == "off" {
		conf.InsecureSkipVerify = true // node_tls_verify: off, documented as for tests only
	}
	if cfg.NodeTLSCA == "" {
		return conf, nil, nil
	}
	ca = &nodeCA{path: cfg.NodeTLSCA}
	pool, _, err := ca.read()
	if err != nil {
		return nil, nil, &config.FieldError{Field: "node_tls_ca", Value: cfg.NodeTLSCA, Err: errors.Unwrap(err)}
	}
	conf.RootCAs = pool
	return conf, ca, nil
}

// nodeCA is node_tls_ca as read at start. sipgo v1.7.3 clones the TLS
// configuration for every dial and offers no per-dial hook, and
// crypto/tls hands a verification callback no server name for a node
// dialled by IP: the pool in use cannot be swapped at run time without
// a data race or without dropping the check of the node's address. So a
// SIGHUP re-reads the file and reports: unchanged, refused (a file
// without a certificate: logged as an error), or changed (takes effect at
// the next start).
type nodeCA struct {
	path string
	mu   sync.Mutex
	pem  []byte // the certificates in use, as read at start
}

var errNoPEM = errors.New("no PEM certificate in the file")

// read parses the file: its pool and its certificates, re-encoded.
func (c *nodeCA) read() (*x509.CertPool, []byte, error) {
	data, err := os.ReadFile(c.path)
	if err != nil {
		return nil, nil, fmt.Errorf("node_tls_ca %s: %w", c.path, errors.Unwrap(err))
	}
	pool := x509.NewCertPool()
	var certs bytes.Buffer
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil && block.Type == "CERTIFICATE" {
			pool.AddCert(cert)
			_ = pem.Encode(&certs, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
		}
	}
	if certs.Len() == 0 {
		return nil, nil, fmt.Errorf("node_tls_ca %s: %w", c.path, errNoPEM)
	}
	c.mu.Lock()
	if c.pem == nil {
		c.pem = certs.Bytes()
	}
	c.mu.Unlock()
	return pool, certs.Bytes(), nil
}

// Reload reads the file again: changed reports whether its certificates
// differ from the ones in use; a file that cannot be used is an error.
func (c *nodeCA) Reload() (changed bool, err error) {
	_, certs, err := c.read()
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !bytes.Equal(certs, c.pem), nil
}
