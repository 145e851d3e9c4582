package app

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/sipedge/sipedge/internal/config"
)

// nodeTLSConfig is the client TLS configuration sipedge dials nodes with
// when their record says transport tls or wss: verified against
// node_tls_ca (or the system roots), the node address's IP or name as the
// server name (crypto/tls's own check). ca, nil without node_tls_ca,
// re-reads the file on SIGHUP and swaps the pool new connections use.
func nodeTLSConfig(cfg config.Config) (conf *tls.Config, ca *nodeCA, err error) {
	conf = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.NodeTLSVerify == "off" {
		conf.InsecureSkipVerify = true // node_tls_verify: off, documented as for tests only
	}
	if cfg.NodeTLSCA == "" {
		return conf, nil, nil
	}
	ca = &nodeCA{path: cfg.NodeTLSCA, base: conf}
	pool, certs, err := ca.read()
	if err != nil {
		return nil, nil, &config.FieldError{Field: "node_tls_ca", Value: cfg.NodeTLSCA, Err: errors.Unwrap(err)}
	}
	ca.pem = certs
	ca.pool.Store(pool)
	conf.RootCAs = pool
	return conf, ca, nil
}

// nodeCA is node_tls_ca: the pool in use, swapped by Reload. sipgo
// v1.7.3 clones one tls.Config for every dial, so changing that config's
// RootCAs at run time would race with its clones; instead every
// connection toward a node gets its own config from Client (installed in
// sipgo by proxy.hookNodeTLS), built from the pool in use at that moment
// with the dialled IP or name as ServerName: crypto/tls verifies the
// chain and the address (an IP SAN for a node dialled by IP) as before.
// Connections already open keep the certificate they were verified with.
type nodeCA struct {
	path string
	base *tls.Config // MinVersion, node_tls_verify; never changed after start
	pool atomic.Pointer[x509.CertPool]
	mu   sync.Mutex
	pem  []byte // the certificates in use
}

// Client makes the TLS client side of a connection dialled toward host.
func (c *nodeCA) Client(conn net.Conn, host string) *tls.Conn {
	conf := c.base.Clone()
	conf.RootCAs = c.pool.Load()
	conf.ServerName = host
	return tls.Client(conn, conf)
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
	return pool, certs.Bytes(), nil
}

// Reload reads the file again and, when its certificates differ from the
// ones in use, makes them the pool new connections are verified against
// (changed). A file that cannot be used is an error: the pool stays.
func (c *nodeCA) Reload() (changed bool, err error) {
	pool, certs, err := c.read()
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if bytes.Equal(certs, c.pem) {
		return false, nil
	}
	c.pem = certs
	c.pool.Store(pool)
	return true, nil
}
