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

// handshake dials a TLS server holding cert with conf, as sipgo does for a
// node at 127.0.0.1 (the IP as the server name).
func handshake(t *testing.T, conf *tls.Config, cert tls.Certificate) error {
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
	conf.ServerName = "127.0.0.1"
	c, err := tls.Dial("tcp", l.Addr().String(), conf)
	if err == nil {
		c.Close()
	}
	return err
}

// TestNodeCA_ReloadSwapsThePoolBadFileKeepsIt: node_tls_ca re-read (a
// SIGHUP) verifies new connections against the new CA; a file without a
// certificate is refused and the pool in use stays.
func TestNodeCA_ReloadSwapsThePoolBadFileKeepsIt(t *testing.T) {
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
		name      string
		write     []byte // new file content (nil: unchanged)
		reloadErr string // "" = accepted
		first     bool   // a node with a certificate of the first CA is accepted
		second    bool
	}{
		{"at start: the first CA", nil, "", true, false},
		{"the second CA after reload", second.caPEM, "", false, true},
		{"a file without a certificate keeps the second", []byte("garbage"), "no PEM certificate", false, true},
		{"a missing file keeps it too", nil, "no such file", false, true},
		{"both CAs", append(append([]byte{}, first.caPEM...), second.caPEM...), "", true, true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			switch {
			case st.write != nil:
				if err := os.WriteFile(file, st.write, 0o600); err != nil {
					t.Fatal(err)
				}
				fallthrough
			case st.reloadErr != "":
				if st.reloadErr == "no such file" {
					os.Remove(file)
				}
				_, err := ca.Reload()
				if st.reloadErr == "" && err != nil || st.reloadErr != "" && (err == nil || !strings.Contains(err.Error(), st.reloadErr)) {
					t.Fatalf("Reload: %v, want %q", err, st.reloadErr)
				}
			}
			for _, c := range []struct {
				who  string
				cert tls.Certificate
				want bool
			}{{"first", first.node, st.first}, {"second", second.node, st.second}} {
				if err := handshake(t, conf, c.cert); (err == nil) != c.want {
					t.Errorf("node of the %s CA: handshake err %v, want accepted %v", c.who, err, c.want)
				}
			}
		})
	}
	// The name is still checked: a certificate for 127.0.0.1 dialled as another IP.
	conf2 := conf.Clone()
	conf2.ServerName = "127.0.0.2"
	if err := conf2.VerifyConnection(tls.ConnectionState{ServerName: "127.0.0.2",
		PeerCertificates: mustParse(t, first.node)}); err == nil {
		t.Error("a certificate for 127.0.0.1 accepted for 127.0.0.2")
	}
	if err := conf.VerifyConnection(tls.ConnectionState{PeerCertificates: mustParse(t, first.node)}); err == nil {
		t.Error("a certificate accepted with no name to verify it for")
	}
}

func mustParse(t *testing.T, c tls.Certificate) []*x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{cert}
}
