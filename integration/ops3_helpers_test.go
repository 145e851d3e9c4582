package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Helpers of the issue 3 tests (deservice, maintenance, drain, slow start,
// propagation). Names carry "svc" so they stay clear of the shared
// harness.

// reasonMaintenance is the admission reject reason of a deserviced
// instance (SPEC §3.3), as logged and as the metric label.
const reasonMaintenance = "System in maintenance mode"

// causeDeserviced is its slug, the reason label of sipedge_admission_rejects_total.
const causeDeserviced = "deserviced"

// ---------------------------------------------------------------------------
// /api/status, the parts issue 3 added

// svcNode is one node of /api/status with its service verdict.
type svcNode struct {
	Name        string  `json:"name"`
	Healthy     bool    `json:"healthy"`
	Eligible    bool    `json:"eligible"`
	Reason      string  `json:"reason"`
	State       string  `json:"state"`
	InService   bool    `json:"in_service"`
	OutReason   string  `json:"out_reason"`
	Calls       int     `json:"calls"`
	Load        float64 `json:"load"`
	Weight      float64 `json:"weight"`
	Effective   float64 `json:"effective_weight"`
	Maintenance bool    `json:"maintenance"`
	Capable     bool    `json:"capable"`
	KeptActive  bool    `json:"kept_active"`
}

// svcStatusDoc is /api/status as the issue 3 tests read it.
type svcStatusDoc struct {
	Instance struct {
		Name       string   `json:"name"`
		State      string   `json:"state"`
		Dialogs    int      `json:"dialogs"`
		Deserviced bool     `json:"deserviced"`
		HeldBack   bool     `json:"held_back"`
		Profiles   []string `json:"profiles"`
	} `json:"instance"`
	Nodes []svcNode `json:"nodes"`
}

// svcStatus reads /api/status with the service fields.
func (s *sipedge) svcStatus() (svcStatusDoc, string, error) {
	code, body, err := s.get("/api/status")
	if err != nil {
		return svcStatusDoc{}, "", err
	}
	if code != 200 {
		return svcStatusDoc{}, body, fmt.Errorf("GET /api/status: HTTP %d", code)
	}
	var d svcStatusDoc
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		return svcStatusDoc{}, body, fmt.Errorf("GET /api/status: %w", err)
	}
	return d, body, nil
}

// svcNodeOf returns one node of /api/status.
func (s *sipedge) svcNodeOf(name string) (svcNode, string, error) {
	d, body, err := s.svcStatus()
	if err != nil {
		return svcNode{}, body, err
	}
	for _, n := range d.Nodes {
		if n.Name == name {
			return n, body, nil
		}
	}
	return svcNode{}, body, fmt.Errorf("node %s not in /api/status", name)
}

// waitNodeState waits until the instance reports node in state (normal,
// draining, maintenance) and cond (when not nil) holds for it too.
func (s *sipedge) waitNodeState(t testing.TB, timeout time.Duration, node, state string, cond func(svcNode) string) svcNode {
	t.Helper()
	var last svcNode
	eventually(t, timeout, fmt.Sprintf("sipedge %s reports node %s %s", s.name, node, state), func() string {
		n, body, err := s.svcNodeOf(node)
		if err != nil {
			return err.Error() + "\n" + body
		}
		last = n
		if n.State != state {
			return fmt.Sprintf("state %q (%+v)", n.State, n)
		}
		if cond != nil {
			if why := cond(n); why != "" {
				return fmt.Sprintf("%s (%+v)", why, n)
			}
		}
		return ""
	})
	return last
}

// waitInstance waits until the instance's own /api/status verdict matches.
func (s *sipedge) waitInstance(t testing.TB, timeout time.Duration, what string, cond func(svcStatusDoc) string) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("sipedge %s: %s", s.name, what), func() string {
		d, body, err := s.svcStatus()
		if err != nil {
			return err.Error() + "\n" + body
		}
		if why := cond(d); why != "" {
			return fmt.Sprintf("%s (instance %+v)", why, d.Instance)
		}
		return ""
	})
}

// readyz returns the HTTP status of /readyz (0 on error).
func (s *sipedge) readyz() int {
	code, _, err := s.get("/readyz")
	if err != nil {
		return 0
	}
	return code
}

// waitReadyz waits until /readyz answers want.
func (s *sipedge) waitReadyz(t testing.TB, timeout time.Duration, want int) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("sipedge %s /readyz = %d", s.name, want), func() string {
		if got := s.readyz(); got != want {
			return fmt.Sprintf("HTTP %d", got)
		}
		return ""
	})
}

// ---------------------------------------------------------------------------
// Redis, as an operator writes it

// writeHash writes fields of a hash (plain redis-cli HSET, nothing published).
func (e *env) writeHash(key string, kv ...string) {
	e.t.Helper()
	args := make([]any, len(kv))
	for i, v := range kv {
		args[i] = v
	}
	if err := e.rdb.HSet(context.Background(), key, args...).Err(); err != nil {
		e.t.Fatalf("HSET %s %v: %v", key, kv, err)
	}
}

// readField reads one field ("" when absent).
func (e *env) readField(key, field string) string {
	v, _ := e.rdb.HGet(context.Background(), key, field).Result()
	return v
}

// writeSettings writes sipedge:settings fields (plain HSET).
func (e *env) writeSettings(kv ...string) {
	e.t.Helper()
	e.writeHash("sipedge:settings", kv...)
}

// writeProfile creates or rewrites a deservice profile with plain writes
// (SADD + HSET, nothing published).
func (e *env) writeProfile(id, servers, status string) {
	e.t.Helper()
	if err := e.rdb.SAdd(context.Background(), "sipedge:profiles", id).Err(); err != nil {
		e.t.Fatalf("SADD sipedge:profiles %s: %v", id, err)
	}
	e.writeHash("sipedge:profile:"+id, "name", "test "+id, "description", "integration test", "servers", servers, "status", status)
}

// ctlOK runs sipedgectl and fails the test when it exits non-zero.
func (e *env) ctlOK(args ...string) string {
	e.t.Helper()
	out, err := e.sipedgectl(args...)
	if err != nil {
		e.t.Fatalf("sipedgectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// ctlJSON runs sipedgectl --json and decodes its output.
func (e *env) ctlJSON(v any, args ...string) {
	e.t.Helper()
	out := e.ctlOK(append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		e.t.Fatalf("sipedgectl %s --json: not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// ctlStatusNode is a node row of `sipedgectl status --json`.
type ctlStatusNode struct {
	Name            string  `json:"name"`
	State           string  `json:"state"`
	InService       bool    `json:"in_service"`
	OutReason       string  `json:"out_reason"`
	NodeCalls       int     `json:"node_calls"`
	EffectiveWeight float64 `json:"effective_weight"`
}

// ctlStatusNodeOf returns the row of node in `sipedgectl status --json`.
func (e *env) ctlStatusNodeOf(node string) ctlStatusNode {
	e.t.Helper()
	var doc struct {
		Nodes []ctlStatusNode `json:"nodes"`
	}
	e.ctlJSON(&doc, "status")
	for _, n := range doc.Nodes {
		if n.Name == node {
			return n
		}
	}
	e.t.Fatalf("sipedgectl status --json lists no node %s", node)
	return ctlStatusNode{}
}

// bgCtl is a sipedgectl running in the background (drain --wait).
type bgCtl struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
	err            error
	ended          time.Time
}

// startCtl starts sipedgectl without waiting for it; it is killed when
// the test ends.
func (e *env) startCtl(args ...string) *bgCtl {
	e.t.Helper()
	bin := binary(e.t, "sipedgectl")
	b := &bgCtl{done: make(chan struct{})}
	b.cmd = exec.Command(bin, append([]string{"--redis", e.redisAddr}, args...)...)
	b.cmd.Stdout, b.cmd.Stderr = &b.stdout, &b.stderr
	b.cmd.SysProcAttr = sysProcAttr()
	if err := b.cmd.Start(); err != nil {
		e.t.Fatalf("start sipedgectl %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		b.err = b.cmd.Wait()
		b.ended = time.Now()
		close(b.done)
	}()
	e.t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			_ = b.cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

// wait waits for the command and returns its error.
func (b *bgCtl) wait(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(within):
		_ = b.cmd.Process.Kill()
		<-b.done
		t.Fatalf("sipedgectl %v still running after %v; killed\nstdout:\n%s\nstderr:\n%s",
			b.cmd.Args[1:], within, b.stdout.String(), b.stderr.String())
	}
	return b.err
}

// instanceField reads a field of sipedge:instance:<name>.
func (e *env) instanceField(name, field string) string {
	return e.readField("sipedge:instance:"+name, field)
}

// waitInstanceHash waits until sipedge:instance:<name> has field = want
// (instances write it every second).
func (e *env) waitInstanceHash(timeout time.Duration, name, field, want string) {
	e.t.Helper()
	eventually(e.t, timeout, fmt.Sprintf("sipedge:instance:%s %s = %s", name, field, want), func() string {
		got, _ := e.rdb.HGetAll(context.Background(), "sipedge:instance:"+name).Result()
		if got[field] != want {
			return fmt.Sprintf("hash %v", got)
		}
		return ""
	})
}

// ---------------------------------------------------------------------------
// a small SIP UDP client for the exact answers to new dialogs

// sipAnswer is the final response to one request of sipClient.
type sipAnswer struct {
	Code   int
	Reason string
	CallID string
	hdr    map[string][]string
	Raw    string
}

// Header returns the first value of a header (case-insensitive, compact
// forms expanded).
func (a sipAnswer) Header(name string) string {
	if v := a.hdr[strings.ToLower(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseSIPResponse splits a response datagram into status and headers.
func parseSIPResponse(b []byte) (sipAnswer, error) {
	text := string(b)
	head, _, _ := strings.Cut(text, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	f := strings.SplitN(lines[0], " ", 3)
	if len(f) < 2 || f[0] != "SIP/2.0" {
		return sipAnswer{}, fmt.Errorf("not a SIP response: %q", lines[0])
	}
	code, err := strconv.Atoi(f[1])
	if err != nil {
		return sipAnswer{}, fmt.Errorf("bad status line %q", lines[0])
	}
	a := sipAnswer{Code: code, hdr: map[string][]string{}, Raw: text}
	if len(f) == 3 {
		a.Reason = f[2]
	}
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if full, ok := compact[name]; ok {
			name = full
		}
		a.hdr[name] = append(a.hdr[name], strings.TrimSpace(value))
	}
	a.CallID = a.Header("call-id")
	return a, nil
}

// svcTag returns a random token for tags, branches and Call-IDs.
func svcTag() string { return strconv.FormatUint(rand.Uint64(), 36) }

// newDialogRequest builds an out-of-dialog INVITE, REGISTER or SUBSCRIBE
// from local to the sipedge at target. user is the conference id (INVITE)
// or the AOR user (REGISTER, SUBSCRIBE; AOR domain 127.0.0.1).
func newDialogRequest(method, target, local, user, callID, branch, tag string) string {
	ruri := "sip:" + user + "@" + target
	to := "<sip:" + user + "@" + target + ">"
	extra, body := "", ""
	switch method {
	case "REGISTER":
		ruri, to = "sip:127.0.0.1", "<sip:"+user+"@127.0.0.1>"
		extra = "Expires: 3600\r\n"
	case "SUBSCRIBE":
		to = "<sip:" + user + "@127.0.0.1>"
		ruri = "sip:" + user + "@127.0.0.1"
		extra = "Event: presence\r\nExpires: 600\r\n"
	case "INVITE":
		body = "v=0\r\no=svc 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
			"m=audio 49174 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
		extra = "Content-Type: application/sdp\r\n"
	}
	return method + " " + ruri + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK" + branch + ";rport\r\n" +
		"From: <sip:svc-test@127.0.0.1>;tag=" + tag + "\r\n" +
		"To: " + to + "\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 1 " + method + "\r\n" +
		"Contact: <sip:svc-test@" + local + ">\r\n" +
		"Max-Forwards: 70\r\n" + extra +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// sipNewDialogBody sends one INVITE with the given SDP body and returns its
// final answer.
func sipNewDialogBody(target, user, body string) (sipAnswer, error) {
	return sipNewDialogWith(target, "INVITE", user, body, 3*time.Second)
}

// sipNewDialog sends one new-dialog request over UDP to target and returns
// its final response. Retransmits every 500 ms (T1) until an answer comes.
// A non-2xx final answer to an INVITE is ACKed (RFC 3261 17.1.1.3).
func sipNewDialog(target, method, user string, timeout time.Duration) (sipAnswer, error) {
	return sipNewDialogWith(target, method, user, "", timeout)
}

func sipNewDialogWith(target, method, user, body string, timeout time.Duration) (sipAnswer, error) {
	c, err := net.Dial("udp", target)
	if err != nil {
		return sipAnswer{}, err
	}
	defer c.Close()
	local := c.LocalAddr().String()
	callID, branch, tag := "svc-"+svcTag(), svcTag(), svcTag()
	req := newDialogRequest(method, target, local, user, callID, branch, tag)
	if body != "" {
		head, _, _ := strings.Cut(req, "\r\n\r\n")
		head = head[:strings.Index(head, "Content-Length:")]
		req = head + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65535)
	for {
		if _, err := c.Write([]byte(req)); err != nil {
			return sipAnswer{}, err
		}
		resend := time.Now().Add(500 * time.Millisecond)
		for {
			rd := resend
			if deadline.Before(rd) {
				rd = deadline
			}
			_ = c.SetReadDeadline(rd)
			n, err := c.Read(buf)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					if time.Now().After(deadline) {
						return sipAnswer{CallID: callID}, fmt.Errorf("%s %s: no final answer within %v", method, callID, timeout)
					}
					break // retransmit
				}
				return sipAnswer{CallID: callID}, err
			}
			a, err := parseSIPResponse(buf[:n])
			if err != nil || a.CallID != callID || a.Code < 200 {
				continue
			}
			if method == "INVITE" && a.Code >= 300 {
				ack := "ACK sip:" + user + "@" + target + " SIP/2.0\r\n" +
					"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK" + branch + ";rport\r\n" +
					"From: <sip:svc-test@127.0.0.1>;tag=" + tag + "\r\n" +
					"To: " + a.Header("to") + "\r\n" +
					"Call-ID: " + callID + "\r\n" +
					"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
				_, _ = c.Write([]byte(ack))
			}
			return a, nil
		}
	}
}

// ---------------------------------------------------------------------------
// propagation: the first 503 after a write

// rejectProber sends a fresh REGISTER to a sipedge every interval from one
// socket and notes when the first 503 comes back.
type rejectProber struct {
	conn     net.Conn
	stop     chan struct{}
	wg       sync.WaitGroup
	first503 chan time.Time
	mu       sync.Mutex
	answers  map[int]int
	sent     int
}

func startRejectProber(t testing.TB, target string, every time.Duration) *rejectProber {
	t.Helper()
	c, err := net.Dial("udp", target)
	if err != nil {
		t.Fatalf("prober: %v", err)
	}
	p := &rejectProber{conn: c, stop: make(chan struct{}), first503: make(chan time.Time, 1), answers: map[int]int{}}
	local := c.LocalAddr().String()
	p.wg.Add(2)
	go func() { // sender
		defer p.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			req := newDialogRequest("REGISTER", target, local, fmt.Sprintf("prop-%d", i%50),
				"prop-"+svcTag(), svcTag(), svcTag())
			if _, err := c.Write([]byte(req)); err == nil {
				p.mu.Lock()
				p.sent++
				p.mu.Unlock()
			}
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	go func() { // receiver
		defer p.wg.Done()
		buf := make([]byte, 65535)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return // closed
			}
			now := time.Now()
			a, err := parseSIPResponse(buf[:n])
			if err != nil {
				continue
			}
			p.mu.Lock()
			p.answers[a.Code]++
			p.mu.Unlock()
			if a.Code == 503 {
				select {
				case p.first503 <- now:
				default:
				}
			}
		}
	}()
	t.Cleanup(p.close)
	return p
}

// close stops the prober (idempotent).
func (p *rejectProber) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.conn.Close()
	p.wg.Wait()
}

// counts returns how many were sent and the answers by code.
func (p *rejectProber) counts() (int, map[int]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[int]int, len(p.answers))
	for k, v := range p.answers {
		m[k] = v
	}
	return p.sent, m
}

// writeClock notes when Redis applied a write to one key, from its
// keyspace notifications: the same moment for a plain HSET and for
// sipedgectl's HSET (+ PUBLISH), whatever process wrote it. A goroutine
// stamps each notification as it arrives.
type writeClock struct {
	at chan time.Time
}

func (e *env) watchWrites(key string) *writeClock {
	e.t.Helper()
	ctx := context.Background()
	if err := e.rdb.ConfigSet(ctx, "notify-keyspace-events", "Kh").Err(); err != nil {
		e.t.Fatalf("CONFIG SET notify-keyspace-events: %v", err)
	}
	ps := e.rdb.Subscribe(ctx, "__keyspace@0__:"+key)
	if _, err := ps.Receive(ctx); err != nil { // the subscription is confirmed
		e.t.Fatalf("SUBSCRIBE keyspace of %s: %v", key, err)
	}
	w := &writeClock{at: make(chan time.Time, 64)}
	ch := ps.Channel()
	go func() {
		for range ch { // ends when ps is closed
			select {
			case w.at <- time.Now():
			default:
			}
		}
	}()
	e.t.Cleanup(func() { ps.Close() })
	return w
}

// next returns when the next write to the key was announced.
func (w *writeClock) next(t testing.TB, within time.Duration) time.Time {
	t.Helper()
	select {
	case at := <-w.at:
		return at
	case <-time.After(within):
		t.Fatalf("no keyspace notification within %v", within)
		return time.Time{}
	}
}

// drain discards notifications already stamped.
func (w *writeClock) drain() {
	for {
		select {
		case <-w.at:
		default:
			return
		}
	}
}

// durStats formats min/median/max of ds in milliseconds.
func durStats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) }
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	all := make([]string, len(ds))
	for i, d := range ds {
		all[i] = ms(d)
	}
	return fmt.Sprintf("min %s ms / median %s ms / max %s ms over %d runs (each: %s)",
		ms(s[0]), ms(med), ms(s[len(s)-1]), len(s), strings.Join(all, ", "))
}

// ---------------------------------------------------------------------------
// traces

// receivedRequests returns the distinct requests of method in a caller's trace
// that it received (sipedge's own BYEs).
func (r uacResult) receivedRequests(method string) []sipMsg {
	return distinctRequests(r.Msgs, method)
}

// confNodes maps each conference id in confs to the node its INVITEs
// reached ("" when none; a split is reported by c.received).
func (c *cluster) confNodes(t testing.TB, confs []string) map[string]string {
	t.Helper()
	place := c.placements(t)
	out := map[string]string{}
	for _, id := range confs {
		for n := range place[id] {
			out[id] = n
		}
	}
	return out
}
