package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// selfSignedFor is a certificate for 127.0.0.1 that no system root signs.
func selfSignedFor(t *testing.T) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestHookNodeTLS_EveryTLSAndWSSDialGoesThroughTheClient: with the hook,
// sipgo v1.7.3's TLS and WSS transports wrap every connection they dial
// with the client given, naming the address dialled (the node's IP); the
// user agent's own tls.Config (the system roots, which refuse the node's
// certificate) is not used. Without the hook both dials fail.
func TestHookNodeTLS_EveryTLSAndWSSDialGoesThroughTheClient(t *testing.T) {
	cert := selfSignedFor(t)
	nodeUA, err := sipgo.NewUA()
	if err != nil {
		t.Fatal(err)
	}
	defer nodeUA.Close()
	node, err := sipgo.NewServer(nodeUA)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(how func(net.Listener) error) int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go how(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}}))
		t.Cleanup(func() { l.Close() })
		return l.Addr().(*net.TCPAddr).Port
	}
	ports := map[string]int{"tls": serve(node.ServeTLS), "wss": serve(node.ServeWSS)}

	for _, hooked := range []bool{true, false} {
		ua, err := sipgo.NewUA(sipgo.WithUserAgenTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var hosts []string
		if hooked {
			err := hookNodeTLS(ua.TransportLayer(), func(c net.Conn, host string) *tls.Conn {
				mu.Lock()
				hosts = append(hosts, host)
				mu.Unlock()
				pool := x509.NewCertPool()
				leaf, _ := x509.ParseCertificate(cert.Certificate[0])
				pool.AddCert(leaf)
				return tls.Client(c, &tls.Config{RootCAs: pool, ServerName: host})
			})
			if err != nil {
				t.Fatalf("hookNodeTLS: %v", err)
			}
		}
		for _, tp := range []string{"tls", "wss"} {
			t.Run(map[bool]string{true: "hooked", false: "sipgo's own"}[hooked]+"/"+tp, func(t *testing.T) {
				req := sip.NewRequest(sip.OPTIONS, sip.Uri{User: "n", Host: "127.0.0.1", Port: ports[tp],
					UriParams: sip.HeaderParams{{K: "transport", V: tp}}})
				req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: strings.ToUpper(tp),
					Host: "127.0.0.1", Port: 5099, Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}}})
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				c, err := ua.TransportLayer().ClientRequestConnection(ctx, req)
				mu.Lock()
				seen := append([]string(nil), hosts...)
				hosts = nil
				mu.Unlock()
				if !hooked {
					if err == nil {
						t.Errorf("sipgo's own configuration accepted a certificate no root signs")
					}
					return
				}
				if err != nil {
					t.Fatalf("dial over %s: %v", tp, err)
				}
				_ = c
				if len(seen) != 1 || seen[0] != "127.0.0.1" {
					t.Errorf("client called for %q, want once for 127.0.0.1", seen)
				}
			})
		}
		ua.Close()
	}
}

// A transport layer without the fields the hook sets is an error, never a panic.
func TestHookNodeTLS_MissingFieldsAreAnError(t *testing.T) {
	if err := hookNodeTLS(nil, func(net.Conn, string) *tls.Conn { return nil }); err == nil {
		t.Error("nil layer: no error")
	}
	type fake struct{ tls int }
	if _, err := settable(reflectValueOf(&fake{}), "tls", reflectTypeOfPtrTLS()); err == nil {
		t.Error("a field of another type: no error")
	}
	if _, err := settable(reflectValueOf(&fake{}), "tlsClient", nil); err == nil {
		t.Error("a missing field: no error")
	}
}

func reflectValueOf(v any) reflect.Value { return reflect.ValueOf(v).Elem() }
func reflectTypeOfPtrTLS() reflect.Type  { return reflect.TypeOf((*sip.TransportTLS)(nil)) }
