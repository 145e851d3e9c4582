package app

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/sipedge/sipedge/internal/config"
)

// nodeTLSConfig is the client TLS configuration sipedge dials nodes with
// when their record says transport tls: verified against node_tls_ca (or
// the system roots), the node address's IP or name as the server name.
func nodeTLSConfig(cfg config.Config) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.NodeTLSVerify == "off" {
		conf.InsecureSkipVerify = true // node_tls_verify: off, documented as for tests only
	}
	if cfg.NodeTLSCA != "" {
		pem, err := os.ReadFile(cfg.NodeTLSCA)
		if err != nil {
			return nil, &config.FieldError{Field: "node_tls_ca", Value: cfg.NodeTLSCA, Err: err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &config.FieldError{Field: "node_tls_ca", Value: cfg.NodeTLSCA, Err: fmt.Errorf("no PEM certificate in the file")}
		}
		conf.RootCAs = pool
	}
	return conf, nil
}
