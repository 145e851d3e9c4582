package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startTLSNode runs a confnode with a TLS listener (certificate for
// 127.0.0.1 named cn); it registers itself with transport tls.
func startTLSNode(t *testing.T, e *env, name, cn string) (tlsAddr, certFile string, p *proc) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cert, key := selfSigned(t, dir, cn)
	tlsAddr = loopback(freePort(t))
	p = startProc(t, "confnode-"+name, binary(t, "confnode"), "--name", name, "--listen", loopback(freePort(t)),
		"--tls-listen", tlsAddr, "--tls-cert", cert, "--tls-key", key, "--redis", e.redisAddr,
		"--log-format", "json", "--heartbeat-interval", "300ms", "--rtp=false")
	return tlsAddr, cert, p
}

// Issue 10 item 5: TLS toward a node whose record says transport tls.
// sipedge verifies the node's certificate against node_tls_ca; a caller
// over UDP gets its call (INVITE, ACK, BYE through sipedge) and the node
// sees each request over TLS. Record-Route is doubled: tls (the TLS
// listener) toward the node, udp toward the caller.
func TestNodeTLS_CallsReachATLSNode(t *testing.T) {
	e := newEnv(t)
	tlsAddr, nodeCert, node := startTLSNode(t, e, "t1", "node.example")
	eventually(t, 5*time.Second, "node registered with transport tls", func() string {
		h, err := e.rdb.HGetAll(context.Background(), "sipedge:node:t1").Result()
		if err != nil {
			return err.Error()
		}
		if h["transport"] != "tls" || h["addr"] != tlsAddr {
			return "node hash " + h["transport"] + " " + h["addr"]
		}
		return ""
	})
	cert, key := selfSigned(t, t.TempDir(), "edge.example")
	edgeTLS := loopback(freePort(t))
	s := e.startSipedge("T", "--tls-listen", edgeTLS, "--tls-cert", cert, "--tls-key", key, "--node-tls-ca", nodeCert)
	s.waitRing(t, 5*time.Second, "t1")

	link := udpLink(t, "127.0.0.1:0", s.sipAddr())
	link.ackGap = 300 * time.Millisecond
	ok := link.call(t, s.sipAddr(), "tlsnode")
	rr := recordRouteLines(ok)
	_, edgePort, _ := net.SplitHostPort(edgeTLS)
	if len(rr) != 2 || !strings.Contains(rr[0], ":"+edgePort+";transport=tls;lr") || !strings.Contains(rr[1], ";transport=udp;lr") {
		t.Errorf("Record-Route %q: want tls (port %s) toward the node on top, udp toward the caller", rr, edgePort)
	}
	eventually(t, 3*time.Second, "node saw the call over TLS and ended it by BYE", func() string {
		log := node.log()
		for _, want := range []string{`"transport":"TLS"`, `"call confirmed"`, `"reason":"bye"`} {
			if !strings.Contains(log, want) {
				return "confnode log lacks " + want
			}
		}
		return ""
	})
}

// A node's TLS certificate is verified by default: a sipedge without
// node_tls_ca (system roots) does not accept the self-signed one, so the
// node fails its probes and is never chosen; and a node whose record says
// ws, while sipedge has no ws_listen, is refused with a log naming it.
func TestNodeTLS_UnverifiedAndUnsupportedNodesNotChosen(t *testing.T) {
	e := newEnv(t)
	startTLSNode(t, e, "t2", "node.example")
	cert, key := selfSigned(t, t.TempDir(), "edge.example")
	s := e.startSipedge("U", "--tls-listen", loopback(freePort(t)), "--tls-cert", cert, "--tls-key", key)
	e.registerNode("w1", loopback(freePort(t)))
	if err := e.rdb.HSet(context.Background(), "sipedge:node:w1", "transport", "ws").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "TLS node down (certificate not verified), ws node down (no ws_listen)", func() string {
		log := s.proc.log()
		for _, want := range []string{"certificate", "transport ws needs ws_listen"} {
			if !strings.Contains(log, want) {
				return "sipedge log lacks " + want
			}
		}
		return ""
	})
	s.waitRing(t, 10*time.Second) // empty: neither is chosen
	link := udpLink(t, "127.0.0.1:0", s.sipAddr())
	inv := "INVITE sip:c1@" + s.sipAddr() + " SIP/2.0\r\nVia: SIP/2.0/UDP " + link.addr + ";branch=z9hG4bKnt" + svcTag() + ";rport\r\n" +
		"From: <sip:a@example.com>;tag=a1\r\nTo: <sip:c1@example.com>\r\nCall-ID: nt-" + svcTag() + "\r\nCSeq: 1 INVITE\r\n" +
		"Contact: <sip:a@" + link.addr + ">\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if err := link.send(inv); err != nil {
		t.Fatal(err)
	}
	if res := link.waitFinal(t, "INVITE"); !strings.HasPrefix(res, "SIP/2.0 503") {
		t.Errorf("INVITE with no usable node: %s", strings.SplitN(res, "\r\n", 2)[0])
	}
}

// node_tls_ca is re-read on SIGHUP: an unchanged file is logged as such;
// a file that holds no certificate is refused with an error; either way
// the pool in use stays and the TLS node keeps its calls. (A file with
// another CA is swapped in: TestNodeTLS_CASwappedOnSIGHUP.)
func TestNodeTLS_CAReReadOnSIGHUP_PoolInUseKept(t *testing.T) {
	e := newEnv(t)
	_, nodeCert, _ := startTLSNode(t, e, "t3", "node.example")
	caFile := filepath.Join(t.TempDir(), "node-ca.pem")
	write := func(b []byte) {
		if err := os.WriteFile(caFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	read := func(f string) []byte {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	write(read(nodeCert))
	cert, key := selfSigned(t, t.TempDir(), "edge.example")
	s := e.startSipedge("R", "--tls-listen", loopback(freePort(t)), "--tls-cert", cert, "--tls-key", key, "--node-tls-ca", caFile)
	s.waitRing(t, 10*time.Second, "t3")

	steps := []struct {
		name, msg, level, errText string
		content                   []byte
	}{
		{"unchanged", "reload: node TLS CA re-read, unchanged", "info", "", read(nodeCert)},
		{"no certificate in the file", "reload: node TLS CA rejected", "error", "no PEM certificate", []byte("not a certificate")},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := len(s.logLines(st.msg))
			write(st.content)
			signal(t, s, syscall.SIGHUP)
			eventually(t, 5*time.Second, st.msg, func() string {
				l := s.logLines(st.msg)
				if len(l) <= before {
					return "not logged"
				}
				if last := l[len(l)-1]; last["level"] != st.level || !strings.Contains(fmt.Sprint(last["error"]), st.errText) {
					return fmt.Sprintf("logged %v", last)
				}
				return ""
			})
			link := udpLink(t, "127.0.0.1:0", s.sipAddr())
			link.ackGap = 300 * time.Millisecond
			link.call(t, s.sipAddr(), "careload"+svcTag()) // INVITE, ACK and BYE through the TLS node
			s.waitRing(t, 3*time.Second, "t3")
		})
	}
}
