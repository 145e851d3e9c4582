package integration

import (
	"net"
	"strings"
	"testing"
	"time"
)

// waitExit waits for p to end and returns its log.
func waitExit(t *testing.T, p *proc, within time.Duration) string {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("%s still running after %s; it should have stopped", p.name, within)
	}
	return p.log()
}

func TestStartup_BadConfigStopsNamingTheField(t *testing.T) {
	bin := binary(t, "sipedge")
	cases := []struct {
		name  string
		args  []string
		field string
	}{
		{"listen without port", []string{"--listen", "127.0.0.1"}, `"listen"`},
		{"unknown log format", []string{"--log-format", "xml"}, `"log_format"`},
		{"probe_down not a number", []string{"--probe-down", "many"}, `"probe_down"`},
		{"negative resync", []string{"--resync-interval", "-2s"}, `"resync_interval"`},
		{"counts window over a second", []string{"--counts-window", "5s"}, `"counts_window"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProc(t, "sipedge", bin, append([]string{"--admin", ""}, tc.args...)...)
			out := waitExit(t, p, 10*time.Second)
			if p.waitErr == nil {
				t.Fatalf("sipedge started with a bad value:\n%s", out)
			}
			if !strings.Contains(out, tc.field) {
				t.Fatalf("error does not name %s:\n%s", tc.field, out)
			}
		})
	}
}

func TestStartup_UnreachableRedisFailsAfterBoundedRetry(t *testing.T) {
	// A port nobody listens on: bind and close it.
	port := freePort(t)
	start := time.Now()
	p := startProc(t, "sipedge", binary(t, "sipedge"), "--redis", loopback(port), "--startup-retry", "1s",
		"--listen", loopback(freePort(t)), "--admin", "")
	out := waitExit(t, p, 20*time.Second)
	if p.waitErr == nil {
		t.Fatalf("sipedge ran without its Redis:\n%s", out)
	}
	if !strings.Contains(out, "unreachable") || !strings.Contains(out, loopback(port)) {
		t.Fatalf("error does not say Redis at %s is unreachable:\n%s", loopback(port), out)
	}
	t.Logf("gave up after %s", time.Since(start).Round(100*time.Millisecond))
}

// TestMalformedSIP_CountedNeverFatal sends broken requests (no foreign
// addresses in them) to the real binary: each is answered 400 or dropped,
// counted, and the instance keeps serving.
func TestMalformedSIP_CountedNeverFatal(t *testing.T) {
	e := newEnv(t)
	s := e.startSipedge("A")
	conn, err := net.Dial("udp", s.sipAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	msgs := []string{
		"this is not SIP\r\n\r\n",
		"INVITE sip:conf@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP " + local + ";branch=z9hG4bK-m1\r\nCSeq: 1 INVITE\r\nCall-ID: m1\r\nTo: <sip:conf@127.0.0.1>\r\nContent-Length: 0\r\n\r\n",                               // no From
		"INVITE sip:conf@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP " + local + ";branch=z9hG4bK-m2\r\nFrom: <sip:a@127.0.0.1>\r\nTo: <sip:conf@127.0.0.1>\r\nCall-ID: m2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",    // no From tag
		"INVITE sip:conf@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP " + local + ";branch=z9hG4bK-m3\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:conf@127.0.0.1>\r\nCall-ID: m3\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n", // CSeq method mismatch
		"INVITE sip:conf@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP " + local + ";branch=z9hG4bK-m4\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nContent-Length: 99999\r\n\r\n",                                                       // body shorter than announced
	}
	got400 := 0
	buf := make([]byte, 8192)
	for _, m := range msgs {
		if _, err := conn.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err := conn.Read(buf); err == nil && strings.HasPrefix(string(buf[:n]), "SIP/2.0 400") {
			got400++
		}
	}
	total := s.metric(t, "sipedge_sip_malformed_total", nil)
	if total < float64(len(msgs)) {
		t.Fatalf("sipedge_sip_malformed_total = %v after %d malformed messages", total, len(msgs))
	}
	if got400 < 3 {
		t.Errorf("only %d of the requests with a usable Via were answered 400", got400)
	}
	if code, _, err := s.get("/healthz"); err != nil || code != 200 || s.proc.exited() {
		t.Fatalf("instance not healthy after malformed input: code %d err %v", code, err)
	}
}
