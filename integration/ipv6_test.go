package integration

import (
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Issue 10 item 5: sipedge on an IPv6 address. sipp calls over [::1]
// through sipedge to a confnode on [::1]: the responses reach the caller
// (sipgo would join an IPv6 Via host and port without brackets), and the
// ACK and BYE of a caller that ignores Record-Route are placed by their
// bracketed Request-URI.
func TestIPv6_CallsThroughSipedgeOnLoopback6(t *testing.T) {
	if l, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Fatalf("no IPv6 loopback on this machine: %v", err)
	} else {
		l.Close()
	}
	e := newEnv(t)
	v6 := func(port int) string { return net.JoinHostPort("::1", strconv.Itoa(port)) }
	sipAddr, admin := v6(freePort(t)), loopback(freePort(t))
	startProc(t, "sipedge-v6", binary(t, "sipedge"), "--name", "v6", "--listen", sipAddr, "--redis", e.redisAddr,
		"--admin", admin, "--log-format", "json", "--probe-interval", "300ms", "--media-ports", mediaPorts(t))
	node := v6(freePort(t))
	startProc(t, "confnode-v6", binary(t, "confnode"), "--name", "n6", "--listen", node, "--redis", e.redisAddr,
		"--proxy", sipAddr, "--log-format", "json", "--heartbeat-interval", "300ms")
	s := &sipedge{name: "v6", admin: admin}
	s.waitRing(t, 10*time.Second, "n6")
	errFile := filepath.Join(t.TempDir(), "sipp.err")
	out, err := exec.Command(requireTool(t, "sipp"), "-sn", "uac", "-s", "v6conf", "-i", "::1", "-p", strconv.Itoa(freePort(t)),
		"-m", "3", "-l", "1", "-nostdin", "-timeout", "20s", "-trace_err", "-error_file", errFile, sipAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("sipp over [::1]: %v\n%s", err, lastLines(string(out), 20))
	}
}

func lastLines(s string, n int) string {
	lines := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			if lines++; lines == n {
				return s[i+1:]
			}
		}
	}
	return s
}
