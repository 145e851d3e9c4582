package integration

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// sipp as a media node

// sippNode is a sipp UAS (testdata/node_uas.xml) playing a media node. It
// answers OPTIONS itself (and sipp's -aa would too), so sipedge's probes
// find it healthy. Everything it receives is in its message trace.
type sippNode struct {
	name    string
	port    int
	proc    *proc
	msgFile string
}

func (n *sippNode) addr() string { return loopback(n.port) }

// startSippNode runs a node without registering it anywhere.
func startSippNode(t testing.TB, name string) *sippNode {
	t.Helper()
	sipp := requireTool(t, "sipp")
	dir := t.TempDir()
	n := &sippNode{name: name, port: freePort(t), msgFile: filepath.Join(dir, name+".msg")}
	n.proc = startProc(t, "node-"+name, sipp,
		"-sf", scenario(t, "node_uas.xml"),
		"-i", "127.0.0.1", "-p", strconv.Itoa(n.port), "-t", "u1",
		"-nostdin", "-aa",
		"-timeout", "300s", // a bound, far beyond any test
		"-trace_msg", "-message_file", n.msgFile,
		"-trace_err", "-error_file", filepath.Join(dir, name+".err"),
	)
	n.proc.extra = func() string { return n.summary() }
	n.proc.files = []string{n.msgFile, filepath.Join(dir, name+".err")}
	// Ready when it answers an OPTIONS, as sipedge's probe will ask it.
	eventually(t, 5*time.Second, "sipp node "+name+" answers OPTIONS", func() string {
		if n.proc.exited() {
			t.Fatalf("sipp node %s exited: %v\n%s", name, n.proc.waitErr, n.proc.log())
		}
		code, err := sipOptions(n.addr(), 300*time.Millisecond)
		if err != nil {
			return err.Error()
		}
		if code != 200 {
			return fmt.Sprintf("answered %d", code)
		}
		return ""
	})
	return n
}

// startNode runs a sipp node and registers it in the env's Redis.
func (e *env) startNode(name string) *sippNode {
	e.t.Helper()
	n := startSippNode(e.t, name)
	e.registerNode(name, n.addr())
	return n
}

// received returns the distinct requests of method the node received
// (retransmissions folded by Call-ID and CSeq).
func (n *sippNode) received(t testing.TB, method string) []sipMsg {
	t.Helper()
	msgs, err := parseTrace(n.msgFile)
	if err != nil {
		t.Fatalf("node %s trace: %v", n.name, err)
	}
	return distinctRequests(msgs, method)
}

// summary counts what the node received, by method, for failure reports.
func (n *sippNode) summary() string {
	msgs, err := parseTrace(n.msgFile)
	if err != nil {
		return fmt.Sprintf("node %s trace: %v\n", n.name, err)
	}
	count := map[string]int{}
	for _, m := range msgs {
		if !m.Sent && m.Method != "" {
			count[m.Method]++
		}
	}
	return fmt.Sprintf("node %s received (with retransmissions): %v\n", n.name, count)
}

// ---------------------------------------------------------------------------
// sipp as a caller

// uac describes one sipp client run.
type uac struct {
	Scenario string     // file in testdata/
	Target   string     // host:port the requests are sent to
	Rows     [][]string // injection CSV, one row per call
	Rate     int        // calls per second (default 50)
	Limit    int        // max simultaneous calls (default: all)
	Hold     time.Duration
	Timeout  time.Duration // bound on the whole run (default 60 s)
}

// uacResult is what a finished sipp client run tells.
type uacResult struct {
	Name       string
	Exit       int // sipp: 0 all calls succeeded, 1 some failed
	Successful int
	Failed     int
	Msgs       []sipMsg // its message trace
	Errors     string   // its -error_file (unexpected messages)
	Proc       *proc
}

// uacRun is a sipp client running in the background.
type uacRun struct {
	t        testing.TB
	name     string
	u        uac
	proc     *proc
	statFile string
	msgFile  string
	errFile  string
}

// startUAC starts sipp as a client; wait collects the result.
func startUAC(t testing.TB, name string, u uac) *uacRun {
	t.Helper()
	sipp := requireTool(t, "sipp")
	if len(u.Rows) == 0 {
		t.Fatalf("uac %s: no calls", name)
	}
	if u.Rate <= 0 {
		u.Rate = 50
	}
	if u.Limit <= 0 {
		u.Limit = len(u.Rows)
	}
	if u.Timeout <= 0 {
		u.Timeout = 60 * time.Second
	}
	hold := max(u.Hold.Milliseconds(), 1)
	dir := t.TempDir()
	csv := filepath.Join(dir, name+".csv")
	var b strings.Builder
	b.WriteString("SEQUENTIAL\n")
	for _, r := range u.Rows {
		b.WriteString(strings.Join(r, ";") + ";\n")
	}
	if err := os.WriteFile(csv, []byte(b.String()), 0o644); err != nil {
		t.Fatalf("uac %s: %v", name, err)
	}
	r := &uacRun{t: t, name: name, u: u,
		statFile: filepath.Join(dir, name+".stat.csv"),
		msgFile:  filepath.Join(dir, name+".msg"),
		errFile:  filepath.Join(dir, name+".err"),
	}
	r.proc = startProc(t, "uac-"+name, sipp,
		"-sf", scenario(t, u.Scenario), "-inf", csv,
		"-i", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), "-t", "u1", "-nostdin",
		"-m", strconv.Itoa(len(u.Rows)), "-r", strconv.Itoa(u.Rate), "-l", strconv.Itoa(u.Limit),
		"-d", strconv.FormatInt(hold, 10),
		"-recv_timeout", "6000", // a call that hears nothing for 6 s fails
		"-timeout", strconv.Itoa(int(u.Timeout.Seconds()))+"s", "-timeout_error",
		"-trace_stat", "-stf", r.statFile, "-fd", "1",
		"-trace_msg", "-message_file", r.msgFile,
		"-trace_err", "-error_file", r.errFile,
		u.Target,
	)
	r.proc.files = []string{csv, r.statFile, r.msgFile, r.errFile}
	return r
}

// wait waits for the run to end and reads its statistics and traces.
func (r *uacRun) wait() uacResult {
	r.t.Helper()
	select {
	case <-r.proc.done:
	case <-time.After(r.u.Timeout + 15*time.Second):
		r.proc.kill()
		r.t.Fatalf("uac %s: sipp still running after its own -timeout; killed", r.name)
	}
	res := uacResult{Name: r.name, Exit: 0, Proc: r.proc}
	var ee *exec.ExitError
	if errors.As(r.proc.waitErr, &ee) {
		res.Exit = ee.ExitCode()
	} else if r.proc.waitErr != nil {
		r.t.Fatalf("uac %s: %v", r.name, r.proc.waitErr)
	}
	var err error
	if res.Successful, res.Failed, err = readStats(r.statFile); err != nil {
		r.t.Fatalf("uac %s: statistics: %v\n%s", r.name, err, r.proc.log())
	}
	if res.Msgs, err = parseTrace(r.msgFile); err != nil {
		r.t.Fatalf("uac %s: trace: %v", r.name, err)
	}
	if b, err := os.ReadFile(r.errFile); err == nil {
		res.Errors = string(b)
	}
	return res
}

// runUAC starts a sipp client and waits for it.
func runUAC(t testing.TB, name string, u uac) uacResult {
	t.Helper()
	return startUAC(t, name, u).wait()
}

// requireAllSucceeded fails unless sipp exited 0 with want successful and
// no failed calls.
func (r uacResult) requireAllSucceeded(t testing.TB, want int) {
	t.Helper()
	if r.Exit != 0 || r.Successful != want || r.Failed != 0 {
		errs := r.Errors
		if len(errs) > 4000 {
			errs = errs[:4000] + "\n..."
		}
		t.Fatalf("uac %s: exit %d, %d successful, %d failed; want exit 0, %d successful, 0 failed\nunexpected messages:\n%s",
			r.Name, r.Exit, r.Successful, r.Failed, want, errs)
	}
}

// callIDs returns the Call-IDs of the distinct requests of method it sent.
func (r uacResult) callIDs(method string) []string {
	var ids []string
	seen := map[string]bool{}
	for _, m := range r.Msgs {
		if m.Sent && m.Method == method && !seen[m.CallID()] {
			seen[m.CallID()] = true
			ids = append(ids, m.CallID())
		}
	}
	return ids
}

// readStats reads the cumulative successful and failed call counts from the
// last line of sipp's -trace_stat file (written when sipp ends).
func readStats(path string) (ok, failed int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return 0, 0, fmt.Errorf("%s: no statistics line", path)
	}
	head := strings.Split(lines[0], ";")
	last := strings.Split(lines[len(lines)-1], ";")
	col := func(name string) (int, error) {
		i := slices.Index(head, name)
		if i < 0 || i >= len(last) {
			return 0, fmt.Errorf("%s: no column %s", path, name)
		}
		return strconv.Atoi(strings.TrimSpace(last[i]))
	}
	if ok, err = col("SuccessfulCall(C)"); err != nil {
		return 0, 0, err
	}
	failed, err = col("FailedCall(C)")
	return ok, failed, err
}

// scenario is the absolute path of a scenario in testdata/.
func scenario(t testing.TB, file string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", file))
	if err != nil || !fileExists(p) {
		t.Fatalf("scenario %s: not found (%v)", file, err)
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// callRows builds injection rows for uac_call.xml: conference id, and the
// host and port the BYE goes to.
func callRows(byeTo string, confIDs ...string) [][]string {
	host, port, _ := net.SplitHostPort(byeTo)
	rows := make([][]string, len(confIDs))
	for i, id := range confIDs {
		rows[i] = []string{id, host, port}
	}
	return rows
}

// ids returns n ids "prefix-000", "prefix-001", ...
func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// ---------------------------------------------------------------------------
// sipp message traces

// sipMsg is one message from a sipp -trace_msg file.
type sipMsg struct {
	When   string
	Sent   bool
	First  string // request or status line
	Method string // request method; "" for a response
	Code   int    // response status; 0 for a request
	hdr    map[string][]string
	body   string // set by parsers that keep it
	src    string // the address it came from, set by readers that know it
}

// compact maps RFC 3261 compact header names to full lower-case names.
var compact = map[string]string{
	"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact",
	"l": "content-length", "c": "content-type", "k": "supported", "s": "subject",
}

// Header returns the first value of a header (case-insensitive).
func (m sipMsg) Header(name string) string {
	if v := m.hdr[strings.ToLower(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Vias returns every Via value, topmost first, split at commas.
func (m sipMsg) Vias() []string {
	var out []string
	for _, v := range m.hdr["via"] {
		for _, part := range strings.Split(v, ",") {
			out = append(out, strings.TrimSpace(part))
		}
	}
	return out
}

func (m sipMsg) CallID() string { return m.Header("call-id") }

// CSeq is the CSeq header value.
func (m sipMsg) CSeq() string { return m.Header("cseq") }

// RURIUser is the user part of a request's Request-URI.
func (m sipMsg) RURIUser() string {
	f := strings.Fields(m.First)
	if len(f) < 2 {
		return ""
	}
	return uriUser(f[1])
}

// ToUser is the user part of the To URI.
func (m sipMsg) ToUser() string { return uriUser(m.Header("to")) }

// uriUser extracts the user of the first sip: URI in s.
func uriUser(s string) string {
	i := strings.Index(strings.ToLower(s), "sip:")
	if i < 0 {
		return ""
	}
	s = s[i+4:]
	at := strings.IndexAny(s, "@>;")
	if at < 0 || s[at] != '@' {
		return ""
	}
	return s[:at]
}

// viaHostPort returns the sent-by host:port of a Via value.
func viaHostPort(via string) string {
	f := strings.Fields(via)
	if len(f) < 2 {
		return ""
	}
	hp, _, _ := strings.Cut(f[1], ";")
	return hp
}

const traceSeparator = "-----------------------------------------------"

// parseTrace reads a sipp -trace_msg file. A message still being written
// when the file is read is skipped.
func parseTrace(path string) ([]sipMsg, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil // sipp creates it with the first message
		}
		return nil, err
	}
	defer f.Close()
	var (
		msgs  []sipMsg
		cur   *sipMsg
		state int // 0 before a message, 1 direction line seen, 2 headers, 3 body
	)
	flush := func() {
		if cur != nil && cur.First != "" && cur.hdr["call-id"] != nil {
			msgs = append(msgs, *cur)
		}
		cur = nil
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.HasPrefix(line, traceSeparator) {
			flush()
			cur = &sipMsg{When: strings.TrimSpace(strings.TrimLeft(line, "-")), hdr: map[string][]string{}}
			state = 0
			continue
		}
		if cur == nil {
			continue
		}
		switch state {
		case 0:
			switch {
			case strings.Contains(line, "message sent"):
				cur.Sent, state = true, 1
			case strings.Contains(line, "message received"):
				state = 1
			}
		case 1:
			if line == "" {
				continue
			}
			cur.First = line
			if strings.HasPrefix(line, "SIP/2.0 ") {
				f := strings.Fields(line)
				if len(f) >= 2 {
					cur.Code, _ = strconv.Atoi(f[1])
				}
			} else {
				cur.Method = strings.Fields(line)[0]
			}
			state = 2
		case 2:
			if line == "" {
				state = 3
				continue
			}
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			name = strings.ToLower(strings.TrimSpace(name))
			if full, ok := compact[name]; ok {
				name = full
			}
			cur.hdr[name] = append(cur.hdr[name], strings.TrimSpace(value))
		}
	}
	flush()
	return msgs, sc.Err()
}

// distinctRequests keeps the received requests of method, one per Call-ID
// and CSeq (retransmissions folded).
func distinctRequests(msgs []sipMsg, method string) []sipMsg {
	var out []sipMsg
	seen := map[string]bool{}
	for _, m := range msgs {
		if m.Sent || m.Method != method {
			continue
		}
		k := m.CallID() + "|" + m.CSeq()
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, m)
	}
	return out
}

// ---------------------------------------------------------------------------
// a minimal SIP client for probes

// sipOptions sends one OPTIONS over UDP and returns the response status.
func sipOptions(addr string, timeout time.Duration) (int, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	local := c.LocalAddr().String()
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	msg := "OPTIONS sip:" + addr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK" + id + "\r\n" +
		"From: <sip:probe@127.0.0.1>;tag=" + id + "\r\n" +
		"To: <sip:" + addr + ">\r\n" +
		"Call-ID: probe-" + id + "\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		"Max-Forwards: 70\r\n" +
		"Content-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		return 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return 0, err
		}
		f := strings.Fields(string(buf[:n]))
		if len(f) < 2 || f[0] != "SIP/2.0" {
			return 0, fmt.Errorf("not a SIP response: %q", buf[:min(n, 80)])
		}
		code, _ := strconv.Atoi(f[1])
		if code >= 200 {
			return code, nil
		}
	}
}
