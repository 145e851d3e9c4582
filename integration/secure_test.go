package integration

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// selfSigned writes a certificate for 127.0.0.1 named cn and its key.
func selfSigned(t *testing.T, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// readStreamMessage reads one SIP message from a TLS (or TCP) stream.
func readStreamMessage(r *bufio.Reader) (string, error) {
	var head strings.Builder
	length := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "content-length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return "", err
	}
	return head.String() + string(body), nil
}

// sipLink is a client connection that sends and receives whole messages.
type sipLink struct {
	send func(string) error
	recv func() (string, error)
	addr string // local address, for Via and Contact
	tp   string // Via transport: TLS, WS
	// ackGap is a pause between ACK and BYE: a node that handles requests
	// concurrently (confnode) then sees the ACK first.
	ackGap time.Duration
}

// waitFinal reads until a final response to method arrives.
func (l sipLink) waitFinal(t *testing.T, method string) string {
	t.Helper()
	for {
		m, err := l.recv()
		if err != nil {
			t.Fatalf("waiting for the final answer to %s: %v", method, err)
		}
		if strings.HasPrefix(m, "SIP/2.0 1") || !strings.Contains(m, " "+method+"\r\n") {
			continue
		}
		return m
	}
}

// call sends INVITE, ACK and BYE over link through sipedge and returns
// the 200 of the INVITE.
func (l sipLink) call(t *testing.T, target, conf string) string {
	t.Helper()
	callID := "sec-" + svcTag()
	msg := func(method, ruri, branch string, cseq int, extra string) string {
		return fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/%s %s;branch=z9hG4bK%s;rport\r\n"+
			"From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:%s@%s>%s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n"+
			"Contact: <sip:alice@%s;transport=%s>\r\nMax-Forwards: 70\r\n%sContent-Length: 0\r\n\r\n",
			method, ruri, l.tp, l.addr, branch, conf, target, "%s", callID, cseq, method, l.addr, strings.ToLower(l.tp), extra)
	}
	inv := fmt.Sprintf(msg("INVITE", "sip:"+conf+"@"+target, "inv"+svcTag(), 1, ""), "")
	if err := l.send(inv); err != nil {
		t.Fatal(err)
	}
	ok := l.waitFinal(t, "INVITE")
	if !strings.HasPrefix(ok, "SIP/2.0 200") {
		t.Fatalf("INVITE over %s: %s", l.tp, ok)
	}
	res, err := parseSIPResponse([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	var rr []string
	for _, line := range strings.Split(ok, "\r\n") {
		if k, v, found := strings.Cut(line, ":"); found && strings.EqualFold(k, "record-route") {
			rr = append(rr, strings.TrimSpace(v))
		}
	}
	routes := ""
	for i := len(rr) - 1; i >= 0; i-- { // the UAC's route set: reversed (RFC 3261 §12.1.2)
		routes += "Route: " + rr[i] + "\r\n"
	}
	toTag := ";tag=" + strings.Split(strings.Split(res.Header("to"), "tag=")[1], ";")[0]
	contact := strings.Trim(strings.Split(res.Header("contact"), ";")[0], "<>")
	if err := l.send(fmt.Sprintf(msg("ACK", contact, "ack"+svcTag(), 1, routes), toTag)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(l.ackGap)
	if err := l.send(fmt.Sprintf(msg("BYE", contact, "bye"+svcTag(), 2, routes), toTag)); err != nil {
		t.Fatal(err)
	}
	if bye := l.waitFinal(t, "BYE"); !strings.HasPrefix(bye, "SIP/2.0 200") {
		t.Fatalf("BYE over %s: %s", l.tp, bye)
	}
	return ok
}

// Issue 10 item 5: endpoints reach sipedge over TLS and WebSocket; the
// call's in-dialog requests come back over the same transport (Record-Route
// names the TLS or WS listener toward the caller and UDP toward the node),
// and the certificate is re-read on SIGHUP.
func TestSecure_CallsOverTLSAndWebSocket(t *testing.T) {
	e := newEnv(t)
	node := e.startNode("n1")
	e.registerNode("n1", node.addr())
	dir := t.TempDir()
	cert, key := selfSigned(t, dir, "first.example")
	tlsAddr, wsAddr := loopback(freePort(t)), loopback(freePort(t))
	s := e.startSipedge("A", "--tls-listen", tlsAddr, "--ws-listen", wsAddr, "--tls-cert", cert, "--tls-key", key)
	s.waitRing(t, 5*time.Second, "n1")

	dialTLS := func() (*tls.Conn, sipLink) {
		c, err := tls.Dial("tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true}) // self-signed test certificate
		if err != nil {
			t.Fatalf("TLS to sipedge: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		r := bufio.NewReader(c)
		return c, sipLink{addr: c.LocalAddr().String(), tp: "TLS",
			send: func(m string) error { _, err := io.WriteString(c, m); return err },
			recv: func() (string, error) {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				return readStreamMessage(r)
			}}
	}
	c, link := dialTLS()
	if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "first.example" {
		t.Fatalf("certificate %q", cn)
	}
	ok := link.call(t, tlsAddr, "tlsconf")
	_, tlsPort, _ := net.SplitHostPort(tlsAddr)
	if !strings.Contains(ok, ":"+tlsPort+";transport=tls;lr") || !strings.Contains(ok, ";transport=udp;lr") {
		t.Errorf("200 over TLS lacks the double Record-Route (tls toward the caller, udp toward the node):\n%s", ok)
	}
	for _, m := range []string{"INVITE", "ACK", "BYE"} {
		if len(distinctRequests(node.received(t, m), m)) == 0 {
			t.Errorf("node got no %s of the TLS call", m)
		}
	}

	wc, _, _, err := ws.Dialer{Protocols: []string{"sip"}}.Dial(context.Background(), "ws://"+wsAddr)
	if err != nil {
		t.Fatalf("WebSocket to sipedge: %v", err)
	}
	defer wc.Close()
	wsLink := sipLink{addr: wc.LocalAddr().String(), tp: "WS",
		send: func(m string) error { return wsutil.WriteClientText(wc, []byte(m)) },
		recv: func() (string, error) {
			_ = wc.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, err := wsutil.ReadServerText(wc)
			return string(b), err
		}}
	ok = wsLink.call(t, wsAddr, "wsconf")
	_, wsPort, _ := net.SplitHostPort(wsAddr)
	if !strings.Contains(ok, ":"+wsPort+";transport=ws;lr") {
		t.Errorf("200 over WS lacks a Record-Route naming the WS listener:\n%s", ok)
	}

	// A renewed certificate is served after SIGHUP, to new connections.
	selfSigned(t, dir, "renewed.example")
	signal(t, s, syscall.SIGHUP)
	eventually(t, 5*time.Second, "renewed certificate served", func() string {
		c, err := tls.Dial("tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "renewed.example" {
			return cn
		}
		return ""
	})
}
