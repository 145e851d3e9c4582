package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Issue 8, item 6: floods and exhaustion, through the real sipedge,
// confnode and sipp.

// floodArgs are the flood limits of these tests (small, so a drill on a
// shared 2-core machine shows every limit at work).
var floodArgs = []string{
	"--log-level", "info",
	"--source-rate", "20", "--source-burst", "40", "--source-drop-rate", "100",
	"--source-halfopen", "32", "--source-ports", "400", "--retry-after", "9",
}

// mediaUse is the media part of /api/status.
func mediaUse(s *sipedge) (inUse, sessions int, err error) {
	code, body, err := s.get("/api/status")
	if err != nil {
		return 0, 0, err
	}
	if code != 200 {
		return 0, 0, fmt.Errorf("/api/status: HTTP %d", code)
	}
	var doc struct {
		Media *struct {
			Sessions   int `json:"sessions"`
			PortsInUse int `json:"ports_in_use"`
		} `json:"media"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.Media == nil {
		return 0, 0, fmt.Errorf("/api/status media: %v: %.200s", err, body)
	}
	return doc.Media.PortsInUse, doc.Media.Sessions, nil
}

// rssKB reads VmRSS of a process from /proc.
func rssKB(t testing.TB, p *proc) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "status"))
	if err != nil {
		t.Fatalf("read RSS of %s: %v", p.name, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS for %s", p.name)
	return 0
}

// flooder sends pre-built INVITEs with SDP, each with its own Call-ID and
// branch, from one source address at a fixed rate, and counts the answers.
type flooder struct {
	conn       *net.UDPConn
	sent       atomic.Int64
	got503     atomic.Int64
	got503RA   atomic.Int64 // with Retry-After
	got200     atomic.Int64
	stop, done chan struct{}
	wg         sync.WaitGroup
}

func startFlooder(t testing.TB, from, target string, perSecond int, d time.Duration) *flooder {
	t.Helper()
	la, _ := net.ResolveUDPAddr("udp", from)
	conn, err := net.ListenUDP("udp", la)
	if err != nil {
		t.Fatalf("flooder: %v", err)
	}
	_ = conn.SetWriteBuffer(4 << 20)
	ra, _ := net.ResolveUDPAddr("udp", target)
	f := &flooder{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	local := conn.LocalAddr().String()
	const mark = "XXXXXXXXXX"
	sdp := "v=0\r\no=flood 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n" +
		"m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
	tmpl := []byte("INVITE sip:flood-conf@" + target + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK-" + mark + ";rport\r\n" +
		"From: <sip:flooder@127.0.0.2>;tag=f" + mark + "\r\n" +
		"To: <sip:flood-conf@" + target + ">\r\n" +
		"Call-ID: flood-" + mark + "\r\nCSeq: 1 INVITE\r\n" +
		"Contact: <sip:flooder@" + local + ">\r\nMax-Forwards: 70\r\n" +
		"Content-Type: application/sdp\r\nContent-Length: " + strconv.Itoa(len(sdp)) + "\r\n\r\n" + sdp)
	var at []int
	for i := 0; ; {
		j := bytes.Index(tmpl[i:], []byte(mark))
		if j < 0 {
			break
		}
		at = append(at, i+j)
		i += j + len(mark)
	}
	f.wg.Add(2)
	go func() { // answers: count them, never ACK
		defer f.wg.Done()
		buf := make([]byte, 65535)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			m := buf[:n]
			switch {
			case bytes.HasPrefix(m, []byte("SIP/2.0 503")):
				f.got503.Add(1)
				if bytes.Contains(m, []byte("\r\nRetry-After: 9\r\n")) {
					f.got503RA.Add(1)
				}
			case bytes.HasPrefix(m, []byte("SIP/2.0 200")):
				f.got200.Add(1)
			}
		}
	}()
	go func() {
		defer f.wg.Done()
		defer close(f.done)
		start := time.Now()
		msg := append([]byte(nil), tmpl...)
		var n int64
		for {
			el := time.Since(start)
			if el >= d {
				return
			}
			select {
			case <-f.stop:
				return
			default:
			}
			for target := int64(el.Seconds() * float64(perSecond)); n < target; n++ {
				digits := fmt.Appendf(nil, "%010d", n)
				for _, o := range at {
					copy(msg[o:], digits)
				}
				if _, err := conn.WriteToUDP(msg, ra); err == nil {
					f.sent.Add(1)
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	t.Cleanup(f.close)
	return f
}

func (f *flooder) close() {
	select {
	case <-f.stop:
		return
	default:
	}
	close(f.stop)
	f.conn.Close()
	f.wg.Wait()
}

// startUACFrom is startUAC from another loopback address (sipp -i).
func startUACFrom(t testing.TB, name, ip string, u uac) *uacRun {
	t.Helper()
	sipp := requireTool(t, "sipp")
	dir := t.TempDir()
	csv := filepath.Join(dir, name+".csv")
	var b strings.Builder
	b.WriteString("SEQUENTIAL\n")
	for _, r := range u.Rows {
		b.WriteString(strings.Join(r, ";") + ";\n")
	}
	if err := os.WriteFile(csv, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &uacRun{t: t, name: name, u: u, statFile: filepath.Join(dir, name+".stat.csv"),
		msgFile: filepath.Join(dir, name+".msg"), errFile: filepath.Join(dir, name+".err")}
	r.proc = startProc(t, "uac-"+name, sipp,
		"-sf", scenario(t, u.Scenario), "-inf", csv,
		"-i", ip, "-p", strconv.Itoa(freePort(t)), "-t", "u1", "-nostdin",
		"-m", strconv.Itoa(len(u.Rows)), "-r", strconv.Itoa(u.Rate), "-l", strconv.Itoa(len(u.Rows)),
		"-d", strconv.FormatInt(max(u.Hold.Milliseconds(), 1), 10),
		"-recv_timeout", "6000", "-timeout", strconv.Itoa(int(u.Timeout.Seconds()))+"s", "-timeout_error",
		"-trace_stat", "-stf", r.statFile, "-fd", "1",
		"-trace_msg", "-message_file", r.msgFile,
		"-trace_err", "-error_file", r.errFile,
		u.Target,
	)
	r.proc.files = []string{csv, r.statFile, r.msgFile, r.errFile}
	return r
}

// The drill: 20 000 INVITE/s with SDP from 127.0.0.2 for 5 s while
// 127.0.0.3 places 5 calls/s to a real confnode. The second source's calls
// succeed during the flood and after it, the relay range is never
// exhausted, the flooder's calls are ended by Timer H (it never ACKs) well
// before any other path would free them, log lines stay bounded while the
// counters count every refusal, and RSS returns near its baseline.
func TestFlood_20kInvitesPerSecond_OtherSourceUnharmed(t *testing.T) {
	e := newEnv(t)
	const rangePorts = 2000
	lo := relayRange(t, rangePorts)
	se := e.startSipedge("A", append([]string{"--media-ports", fmt.Sprintf("%d-%d", lo, lo+rangePorts-1)}, floodArgs...)...)
	e.startConfnode("cn1", "--rtp=false", "--log-level", "info")
	se.waitRing(t, 5*time.Second, "cn1")

	// Warm up, then take the baseline.
	runUAC(t, "warm", uac{Scenario: "uac_call.xml", Target: se.sipAddr(),
		Rows: callRows(se.sipAddr(), ids("flood-warm", 5)...), Rate: 5, Hold: 100 * time.Millisecond}).requireAllSucceeded(t, 5)
	time.Sleep(time.Second)
	baseline := rssKB(t, se.proc)

	const calls = 100 // 20 s at 5/s: 2 s before the flood, 5 s in it, 13 s after
	legit := startUACFrom(t, "legit", "127.0.0.3", uac{Scenario: "uac_call.xml", Target: se.sipAddr(),
		Rows: callRows(se.sipAddr(), ids("flood-legit", calls)...), Rate: 5, Hold: 500 * time.Millisecond,
		Timeout: 90 * time.Second})

	// Watch the relay range the whole time.
	var maxPorts atomic.Int64
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if n, _, err := mediaUse(se); err == nil && int64(n) > maxPorts.Load() {
				maxPorts.Store(int64(n))
			}
		}
	}()

	time.Sleep(2 * time.Second)
	f := startFlooder(t, "127.0.0.2:0", se.sipAddr(), 20000, 5*time.Second)
	<-f.done
	floodEnd := time.Now()
	t.Logf("flooder sent %d INVITEs in 5 s; answers: %d x 503 (%d with Retry-After), %d x 200",
		f.sent.Load(), f.got503.Load(), f.got503RA.Load(), f.got200.Load())

	res := legit.wait()
	if res.Successful*100 < calls*99 {
		t.Errorf("second source: %d of %d calls succeeded (%d failed), want at least 99 %%\n%.3000s",
			res.Successful, calls, res.Failed, res.Errors)
	}

	// Every flooder call admitted was answered 2xx and never ACKed: Timer
	// H (32 s) frees its ports. The other path (the node's own BYE after
	// 64×T1, unanswered by the flooder for another 32 s) takes 64 s.
	eventually(t, 45*time.Second-time.Since(floodEnd), "relay ports freed by Timer H", func() string {
		n, s, err := mediaUse(se)
		if err != nil {
			return err.Error()
		}
		if n != 0 || s != 0 {
			return fmt.Sprintf("%d ports in use by %d sessions", n, s)
		}
		return ""
	})
	close(stopWatch)
	watch.Wait()
	if m := maxPorts.Load(); m >= rangePorts*95/100 {
		t.Errorf("relay ports in use peaked at %d of %d: the range was (nearly) exhausted", m, rangePorts)
	} else {
		t.Logf("relay ports in use peaked at %d of %d", m, rangePorts)
	}

	limited := func(reason string) float64 {
		return se.metricOr0(t, "sipedge_proxy_limited_total", map[string]string{"reason": reason})
	}
	drops, rate, half := limited("source_drop"), limited("source_rate"), limited("source_halfopen")
	t.Logf("limited: source_drop %v, source_rate %v, source_halfopen %v, source_ports %v",
		drops, rate, half, limited("source_ports"))
	if drops == 0 || rate+half == 0 {
		t.Errorf("flood not limited: source_drop %v, source_rate %v, source_halfopen %v", drops, rate, half)
	}
	if f.got503.Load() == 0 || f.got503RA.Load() == 0 {
		t.Errorf("flooder got %d 503 answers, %d with Retry-After: 9", f.got503.Load(), f.got503RA.Load())
	}
	if got := se.metricOr0(t, "sipedge_proxy_ack_timeouts_total", nil); got == 0 {
		t.Errorf("no call ended by Timer H, although the flooder never ACKed")
	}
	if got := se.metricOr0(t, "sipedge_proxy_halfopen_dialogs", nil); got != 0 {
		t.Errorf("%v half-open dialogs left", got)
	}

	// Log lines are sampled, the counters exact.
	lines := len(se.logLines("INVITE dropped unanswered")) + len(se.logLines("new dialog refused by a flood limit"))
	refused := drops + rate + half + limited("source_ports")
	t.Logf("%d limiter log lines for %v refusals", lines, refused)
	if lines == 0 || float64(lines)*20 > refused {
		t.Errorf("%d limiter log lines for %v refusals: want some, and far fewer than refusals", lines, refused)
	}

	// RSS returns near its baseline.
	eventually(t, 20*time.Second, "RSS back near its baseline", func() string {
		if rss := rssKB(t, se.proc); rss > baseline+50*1024 {
			return fmt.Sprintf("RSS %d kB, baseline %d kB", rss, baseline)
		}
		return ""
	})
	t.Logf("RSS baseline %d kB, after %d kB", baseline, rssKB(t, se.proc))
}

// Near a global limit a new call gets 503 before any state exists: with
// the relay range above max_ports_percent, the next INVITE is refused and
// no port is bound for it; with the runtime's memory above max_memory_mb, every new
// dialog is.
func TestFlood_GlobalLimits_503BeforeState(t *testing.T) {
	t.Run("ports", func(t *testing.T) {
		m := newMediaEnv(t, nil, []string{"--rtp=false"}, "--max-ports-percent", "1", "--retry-after", "4")
		first := m.join("first", "glob-1") // holds 4 ports of 1000: 0.4 %
		defer func() { _ = first.hangup() }()
		before, _, err := mediaUse(m.se)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 { // 4 ports a call: the fourth call crosses 1 % of 1000
			a, err := sipNewDialog(m.se.sipAddr(), "INVITE", "glob-"+strconv.Itoa(i+2), 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if a.Code == 503 {
				if a.Header("retry-after") != "4" || !strings.Contains(a.Reason, "global_ports") {
					t.Errorf("503 %q, Retry-After %q; want global_ports and 4", a.Reason, a.Header("retry-after"))
				}
				n, s, _ := mediaUse(m.se)
				if s > 1+i || n > before+4*i {
					t.Errorf("refused call left state: %d ports, %d sessions", n, s)
				}
				if got := m.se.metricOr0(t, "sipedge_proxy_limited_total", map[string]string{"reason": "global_ports"}); got != 1 {
					t.Errorf("global_ports counted %v, want 1", got)
				}
				return
			}
		}
		t.Errorf("no INVITE refused with the relay range above max_ports_percent")
	})
	t.Run("memory", func(t *testing.T) {
		m := newMediaEnv(t, nil, []string{"--rtp=false"}, "--max-memory-mb", "1")
		a, err := sipNewDialog(m.se.sipAddr(), "INVITE", "mem-1", 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if a.Code != 503 || !strings.Contains(a.Reason, "memory") || a.Header("retry-after") == "" {
			t.Errorf("answer %d %q (Retry-After %q), want 503 memory with Retry-After", a.Code, a.Reason, a.Header("retry-after"))
		}
		if n, s, _ := mediaUse(m.se); n != 0 || s != 0 {
			t.Errorf("refused call left state: %d ports, %d sessions", n, s)
		}
		if got := m.se.metricOr0(t, "sipedge_proxy_limited_total", map[string]string{"reason": "memory"}); got != 1 {
			t.Errorf("memory counted %v, want 1", got)
		}
	})
}

// A source holding its relay-port allowance gets 503 for its next call
// until one of its calls ends and gives its ports back.
func TestFlood_SourcePortsCap_503UntilFreed(t *testing.T) {
	m := newMediaEnv(t, nil, []string{"--rtp=false"}, "--source-ports", "8", "--retry-after", "3")
	first := m.join("first", "sp-1") // 4 ports each
	second := m.join("second", "sp-2")
	defer func() { _ = second.hangup() }()
	a, err := sipNewDialog(m.se.sipAddr(), "INVITE", "sp-3", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a.Code != 503 || !strings.Contains(a.Reason, "source_ports") || a.Header("retry-after") != "3" {
		t.Fatalf("third call answered %d %q (Retry-After %q), want 503 source_ports with Retry-After 3",
			a.Code, a.Reason, a.Header("retry-after"))
	}
	if n, _, _ := mediaUse(m.se); n != 8 {
		t.Errorf("%d relay ports in use after the refusal, want the 8 of the two calls", n)
	}
	if got := m.se.metricOr0(t, "sipedge_proxy_limited_total", map[string]string{"reason": "source_ports"}); got != 1 {
		t.Errorf("source_ports counted %v, want 1", got)
	}
	if err := first.hangup(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "first call's ports freed", func() string {
		if n, _, err := mediaUse(m.se); err != nil || n != 4 {
			return fmt.Sprintf("%d ports in use (%v)", n, err)
		}
		return ""
	})
	if a, err := sipNewDialog(m.se.sipAddr(), "INVITE", "sp-4", 3*time.Second); err != nil || a.Code != 200 {
		t.Errorf("call after the ports came back: %d %q, %v; want 200", a.Code, a.Reason, err)
	}
}

// An INVITE with a To tag sent to sipedge's own address is routed by
// placement (for UAs that ignore Record-Route); one for a call not
// anchored here opens relay ports like a new call, so it meets the same
// limits, and the ports are freed when the node refuses it (481).
func TestFlood_ForgedInDialogInvites_LimitedLikeNewCalls(t *testing.T) {
	m := newMediaEnv(t, nil, []string{"--rtp=false"}, "--source-rate", "1", "--source-burst", "2")
	c, err := net.Dial("udp", m.se.sipAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := c.LocalAddr().String()
	codes := map[int]int{}
	buf := make([]byte, 65535)
	for i := range 5 {
		id := fmt.Sprintf("forged-%d-%s", i, svcTag())
		req := newDialogRequest("INVITE", m.se.sipAddr(), local, "forged-conf", id, svcTag(), svcTag())
		req = strings.Replace(req, "To: <sip:forged-conf@"+m.se.sipAddr()+">", "To: <sip:forged-conf@"+m.se.sipAddr()+">;tag=forged", 1)
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		for {
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("INVITE %d: no final answer: %v", i, err)
			}
			a, err := parseSIPResponse(buf[:n])
			if err == nil && a.CallID == id && a.Code >= 200 {
				codes[a.Code]++
				break
			}
		}
	}
	if codes[481] != 2 || codes[503] != 3 {
		t.Errorf("answers %v, want 2 x 481 (the node knows no such dialog) and 3 x 503 (source_rate)", codes)
	}
	if got := m.se.metricOr0(t, "sipedge_proxy_limited_total", map[string]string{"reason": "source_rate"}); got != 3 {
		t.Errorf("source_rate counted %v, want 3", got)
	}
	eventually(t, 3*time.Second, "no relay port left by refused INVITEs", func() string {
		if n, s, err := mediaUse(m.se); err != nil || n != 0 || s != 0 {
			return fmt.Sprintf("%d ports, %d sessions (%v)", n, s, err)
		}
		return ""
	})
}
