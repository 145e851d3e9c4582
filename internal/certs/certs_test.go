package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed pair named cn into dir.
func writeSelfSigned(t *testing.T, dir, cn string, notAfter time.Time) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, DNSNames: []string{cn}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cf, kf
}

func served(t *testing.T, s *Store) string {
	t.Helper()
	c, err := s.Config().GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.Subject.CommonName
}

func TestStore_ReloadTakesANewPairAndKeepsTheOldOnError(t *testing.T) {
	dir := t.TempDir()
	cf, kf := writeSelfSigned(t, dir, "old.example", time.Now().Add(24*time.Hour))
	s, err := Load(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	if served(t, s) != "old.example" {
		t.Fatal("first certificate not served")
	}
	writeSelfSigned(t, dir, "new.example", time.Now().Add(48*time.Hour))
	if exp, err := s.Reload(); err != nil || exp.Before(time.Now().Add(47*time.Hour)) {
		t.Fatalf("reload: %v %v", exp, err)
	}
	if served(t, s) != "new.example" {
		t.Fatal("renewed certificate not served after Reload")
	}
	if err := os.WriteFile(cf, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reload(); err == nil {
		t.Fatal("a bad certificate file was accepted")
	}
	if served(t, s) != "new.example" {
		t.Fatal("a failed reload replaced the certificate in use")
	}
	if _, err := Load(filepath.Join(dir, "missing.pem"), kf); err == nil {
		t.Fatal("missing file accepted")
	}
}
