package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipedge/sipedge/internal/config"
)

func TestNodeTLSConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	conf, ca, err := nodeTLSConfig(cfg)
	if err != nil || conf.InsecureSkipVerify || conf.RootCAs != nil || ca != nil {
		t.Errorf("default: %+v %v, want verification against the system roots", conf, err)
	}
	cfg.NodeTLSVerify = "off"
	if conf, _, _ := nodeTLSConfig(cfg); !conf.InsecureSkipVerify || conf.VerifyConnection != nil {
		t.Error("node_tls_verify off still verifies")
	}
	for _, bad := range []string{notPEM, filepath.Join(dir, "missing.pem")} {
		cfg.NodeTLSCA = bad
		_, _, err := nodeTLSConfig(cfg)
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != "node_tls_ca" || fe.Value != bad {
			t.Errorf("node_tls_ca %s: err %v, want a FieldError naming it", bad, err)
		}
	}
}

// testCA is a CA and a node certificate for 127.0.0.1 it signed.
type testCA struct {
	caPEM []byte
	node  tls.Certificate
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		node: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// handshake dials a TLS server on 127.0.0.1 holding cert with conf, as
// sipgo does for a node dialled as name (an IP: the server name).
func handshake(t *testing.T, conf *tls.Config, cert tls.Certificate, name string) error {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	conf = conf.Clone()
	conf.ServerName = name
	c, err := tls.Dial("tcp", l.Addr().String(), conf)
	if err == nil {
		c.Close()
	}
	return err
}

// clientHandshake dials a TLS server on 127.0.0.1 holding cert through
// ca.Client, as sipgo does (with the hook) for a node dialled as host.
func clientHandshake(t *testing.T, ca *nodeCA, cert tls.Certificate, host string) error {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Client(raw, host)
	defer c.Close()
	return c.Handshake()
}

// TestNodeCA_ReloadSwapsThePoolNewConnectionsUse: a node's certificate is
// checked against node_tls_ca for the address dialled; a SIGHUP re-read
// of an unchanged file changes nothing, one with another CA becomes the
// pool every new connection is verified against, and one that holds no
// certificate or is gone is an error and the pool in use stays. The
// address check holds throughout: a certificate for 127.0.0.1 is refused
// for a node dialled as 127.0.0.2.
func TestNodeCA_ReloadSwapsThePoolNewConnectionsUse(t *testing.T) {
	first, second := newTestCA(t, "first"), newTestCA(t, "second")
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, first.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NodeTLSCA = file
	conf, ca, err := nodeTLSConfig(cfg)
	if err != nil || ca == nil {
		t.Fatalf("nodeTLSConfig: %v", err)
	}
	steps := []struct {
		name    string
		write   []byte // new content; nil: remove the file
		changed bool
		err     string
		trusted testCA // the CA whose node is accepted afterwards
		other   testCA
	}{
		{"unchanged", first.caPEM, false, "", first, second},
		{"the same certificate with other text around it", append([]byte("# node CA\n"), first.caPEM...), false, "", first, second},
		{"another CA", second.caPEM, true, "", second, first},
		{"no certificate", []byte("garbage"), false, "no PEM certificate", second, first},
		{"removed", nil, false, "no such file", second, first},
		{"the first CA again", first.caPEM, true, "", first, second},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.write == nil {
				os.Remove(file)
			} else if err := os.WriteFile(file, st.write, 0o600); err != nil {
				t.Fatal(err)
			}
			changed, err := ca.Reload()
			if changed != st.changed || (err == nil) != (st.err == "") || err != nil && !strings.Contains(err.Error(), st.err) {
				t.Errorf("Reload = %v, %v; want %v, %q", changed, err, st.changed, st.err)
			}
			if err := clientHandshake(t, ca, st.trusted.node, "127.0.0.1"); err != nil {
				t.Errorf("node of the CA in use refused: %v", err)
			}
			if err := clientHandshake(t, ca, st.other.node, "127.0.0.1"); err == nil {
				t.Error("node of the other CA accepted")
			}
			if err := clientHandshake(t, ca, st.trusted.node, "127.0.0.2"); err == nil || !strings.Contains(err.Error(), "127.0.0.2") {
				t.Errorf("a certificate for 127.0.0.1 dialled as 127.0.0.2: %v, want refused for that address", err)
			}
		})
	}
	// The configuration handed to sipgo itself never changes.
	if err := handshake(t, conf, first.node, "127.0.0.1"); err != nil {
		t.Errorf("start-up configuration: %v", err)
	}
}
