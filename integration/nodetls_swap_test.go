package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fileCA is a test CA: its certificate file and what signs node certificates.
type fileCA struct {
	certFile string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
}

func newFileCA(t *testing.T, name string) fileCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return fileCA{certFile: file, cert: cert, key: key}
}

// nodeCert writes a node certificate the CA signed for ip, and its key.
func (ca fileCA) nodeCert(t *testing.T, ip string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "node " + ip},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(ip)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "node.pem"), filepath.Join(dir, "node.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// startCANode runs a confnode on 127.0.0.1 with a TLS listener holding a
// certificate ca signed for certIP; it registers with transport tls.
func startCANode(t *testing.T, e *env, name string, ca fileCA, certIP string) *proc {
	t.Helper()
	cert, key := ca.nodeCert(t, certIP)
	return startProc(t, "confnode-"+name, binary(t, "confnode"), "--name", name, "--listen", loopback(freePort(t)),
		"--tls-listen", loopback(freePort(t)), "--tls-cert", cert, "--tls-key", key, "--redis", e.redisAddr,
		"--log-format", "json", "--heartbeat-interval", "300ms", "--rtp=false")
}

// Issue 10 item 5 leftover: node_tls_ca is swapped live on SIGHUP. A TLS
// node with a certificate from CA1 carries calls; the nodes move to
// certificates from CA2 and they are refused (probes fail: unknown
// authority) until node_tls_ca holds CA2 and sipedge gets a SIGHUP; then
// new connections verify against CA2 and a call goes through, without a
// restart. A CA2 certificate for another IP (127.0.0.2) is still refused
// for a node dialled at 127.0.0.1: the address check holds with the
// swapped pool. A file with no certificate then leaves CA2 in use (a new
// CA2 node still joins).
func TestNodeTLS_CASwappedOnSIGHUP(t *testing.T) {
	e := newEnv(t)
	ca1, ca2 := newFileCA(t, "CA1"), newFileCA(t, "CA2")
	caFile := filepath.Join(t.TempDir(), "node-ca.pem")
	install := func(src string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(caFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	install(ca1.certFile)
	n1 := startCANode(t, e, "s1", ca1, "127.0.0.1")
	cert, key := selfSigned(t, t.TempDir(), "edge.example")
	s := e.startSipedge("S", "--tls-listen", loopback(freePort(t)), "--tls-cert", cert, "--tls-key", key, "--node-tls-ca", caFile)
	s.waitRing(t, 10*time.Second, "s1")
	call := func(what string) {
		t.Helper()
		link := udpLink(t, "127.0.0.1:0", s.sipAddr())
		link.ackGap = 300 * time.Millisecond
		link.call(t, s.sipAddr(), what+svcTag()) // INVITE, ACK and BYE through a TLS node
	}
	call("ca1")

	// The nodes' certificates move to CA2: s2 for its address, s3 for another.
	n1.kill()
	startCANode(t, e, "s2", ca2, "127.0.0.1")
	startCANode(t, e, "s3", ca2, "127.0.0.2")
	refused := func(node, why string) func() string {
		return func() string {
			for _, l := range s.logLines("media node down: OPTIONS probes failing") {
				if l["node"] == node && strings.Contains(fmt.Sprint(l["error"]), why) {
					return ""
				}
			}
			return "no probe failure of " + node + " for " + why
		}
	}
	eventually(t, 10*time.Second, "s2 refused while node_tls_ca holds CA1", refused("s2", "signed by unknown authority"))
	eventually(t, 10*time.Second, "s3 refused for its address", refused("s3", "valid for 127.0.0.2, not 127.0.0.1"))
	s.waitRing(t, 10*time.Second) // s1 gone, s2 and s3 not verified

	before := len(s.logLines("reload: node TLS CA swapped"))
	install(ca2.certFile)
	signal(t, s, syscall.SIGHUP)
	eventually(t, 5*time.Second, "swap logged", func() string {
		if len(s.logLines("reload: node TLS CA swapped")) <= before {
			return "not logged"
		}
		return ""
	})
	s.waitRing(t, 10*time.Second, "s2") // s3 holds a certificate for 127.0.0.2
	call("ca2")
	for i := 0; i < 3; i++ { // a few probe rounds with the CA2 pool: s3 never joins
		time.Sleep(time.Second)
		s.waitRing(t, time.Second, "s2")
	}

	// A file without a certificate: CA2 stays in use for new connections.
	bad := len(s.logLines("reload: node TLS CA rejected"))
	if err := os.WriteFile(caFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	signal(t, s, syscall.SIGHUP)
	eventually(t, 5*time.Second, "bad file refused", func() string {
		if len(s.logLines("reload: node TLS CA rejected")) <= bad {
			return "not logged"
		}
		return ""
	})
	startCANode(t, e, "s4", ca2, "127.0.0.1")
	s.waitRing(t, 10*time.Second, "s2", "s4")
	call("kept")
}

// The same over secure WebSocket: a wss node holding a CA2 certificate
// is refused while node_tls_ca holds CA1, joins the ring after CA2 is
// written and SIGHUP sent, and carries a call; a wss node with a CA2
// certificate for 127.0.0.2 (listening on 127.0.0.1) never joins.
func TestNodeTLS_CASwappedOnSIGHUP_WSSNode(t *testing.T) {
	e := newEnv(t)
	ca1, ca2 := newFileCA(t, "CA1"), newFileCA(t, "CA2")
	wssNode := func(name, certIP string) *wsNode {
		cert, key := ca2.nodeCert(t, certIP)
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		n := startWSNode(t, &tls.Config{Certificates: []tls.Certificate{pair}})
		e.registerNode(name, n.addr)
		if err := e.rdb.HSet(context.Background(), "sipedge:node:"+name, "transport", "wss").Err(); err != nil {
			t.Fatal(err)
		}
		return n
	}
	good := wssNode("w1", "127.0.0.1")
	wrong := wssNode("w2", "127.0.0.2")
	caFile := filepath.Join(t.TempDir(), "node-ca.pem")
	install := func(src string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(caFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	install(ca1.certFile)
	edgeCert, edgeKey := selfSigned(t, t.TempDir(), "edge.example")
	s := e.startSipedge("V", "--wss-listen", loopback(freePort(t)), "--tls-cert", edgeCert, "--tls-key", edgeKey, "--node-tls-ca", caFile)
	eventually(t, 10*time.Second, "w1 refused while node_tls_ca holds CA1", func() string {
		for _, l := range s.logLines("media node down: OPTIONS probes failing") {
			if l["node"] == "w1" && strings.Contains(fmt.Sprint(l["error"]), "unknown authority") {
				return ""
			}
		}
		return "no probe failure of w1 for an unknown authority"
	})
	s.waitRing(t, 5*time.Second)
	if n := len(good.requests("OPTIONS")); n != 0 {
		t.Fatalf("w1 got %d OPTIONS over an unverified connection", n)
	}

	install(ca2.certFile)
	signal(t, s, syscall.SIGHUP)
	s.waitRing(t, 10*time.Second, "w1")
	link := udpLink(t, "127.0.0.1:0", s.sipAddr())
	link.call(t, s.sipAddr(), "wssca"+svcTag())
	eventually(t, 3*time.Second, "w1 got the call", func() string {
		for _, m := range []string{"INVITE", "ACK", "BYE"} {
			if len(good.requests(m)) != 1 {
				return m + " not received once"
			}
		}
		return ""
	})
	for i := 0; i < 3; i++ { // a few probe rounds with the CA2 pool: w2 never joins
		time.Sleep(time.Second)
		s.waitRing(t, time.Second, "w1")
	}
	if n := len(wrong.requests("OPTIONS")); n != 0 {
		t.Errorf("w2 (certificate for 127.0.0.2) got %d OPTIONS", n)
	}
}
