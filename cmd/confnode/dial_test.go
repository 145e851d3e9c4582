package main

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/sdp/v3"

	"github.com/sipedge/sipedge/internal/nodeauth"
)

// fakeProxy is a UDP socket playing sipedge for the node: it reads what the
// node sends and answers by hand.
type fakeProxy struct {
	t    *testing.T
	conn *net.UDPConn
	last net.Addr // source of the last request read
}

func newFakeProxy(t *testing.T) *fakeProxy { return &fakeProxy{t: t, conn: udpPeer(t)} }

func (p *fakeProxy) addr() string { return p.conn.LocalAddr().String() }

// request returns the next request with method, skipping anything else.
func (p *fakeProxy) request(method sip.RequestMethod) *sip.Request {
	p.t.Helper()
	buf := make([]byte, 65535)
	for {
		_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			p.t.Fatalf("fake proxy waiting for %s: %v", method, err)
		}
		msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			p.t.Fatalf("fake proxy got unparsable %q: %v", buf[:n], err)
		}
		if req, ok := msg.(*sip.Request); ok && req.Method == method {
			p.last = from
			return req
		}
	}
}

// response returns the next response whose CSeq is cseq.
func (p *fakeProxy) response(cseq string) *sip.Response {
	p.t.Helper()
	buf := make([]byte, 65535)
	for {
		_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			p.t.Fatalf("fake proxy waiting for response to %s: %v", cseq, err)
		}
		msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			p.t.Fatal(err)
		}
		if res, ok := msg.(*sip.Response); ok && res.CSeq().Value() == cseq {
			return res
		}
	}
}

func (p *fakeProxy) send(to net.Addr, msg sip.Message) {
	p.t.Helper()
	if _, err := p.conn.WriteTo([]byte(msg.String()), to); err != nil {
		p.t.Fatal(err)
	}
}

// answer replies to req from where it came, with a To tag on non-100s.
func (p *fakeProxy) answer(req *sip.Request, code int, reason string, body []byte, hdrs ...sip.Header) *sip.Response {
	p.t.Helper()
	res := sip.NewResponseFromRequest(req, code, reason, body)
	if code > 100 {
		res.To().Params.Add("tag", "callee-1")
	}
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if body != nil {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	p.send(p.last, res)
	return res
}

func pushDial(t *testing.T, h *harness, entries ...string) {
	t.Helper()
	for _, e := range entries {
		if _, err := h.mr.Lpush(h.k.Dial("cn1"), e); err != nil {
			t.Fatal(err)
		}
	}
}

func branch(req *sip.Request) string {
	b, _ := req.Via().Params.Get("branch")
	return b
}

func header(req *sip.Request, name string) string {
	if v := req.GetHeader(name); v != nil {
		return v.Value()
	}
	return "<absent>"
}

func TestConfnode_DialQueue_CallsThroughProxyWithSipedgeHeaders(t *testing.T) {
	proxy := newFakeProxy(t)
	callee := udpPeer(t) // the callee's media
	h := startNode(t, config{RTP: true, Proxy: proxy.addr()}, nil)

	pushDial(t, h, `{"conf":"conf-9","uri":"sip:bob@127.0.0.1:5999","kind":"adp","role":"host","keep_alive":"if-multiple","id":"r1"}`)
	inv := proxy.request(sip.INVITE)

	if got := inv.Recipient.String(); got != "sip:bob@127.0.0.1:5999" {
		t.Errorf("Request-URI %s, want the dialed uri", got)
	}
	if r := inv.Route(); r == nil || r.Address.HostPort() != proxy.addr() || !r.Address.UriParams.Has("lr") {
		t.Errorf("Route %v, want <sip:%s;lr>", r, proxy.addr())
	}
	if proxy.last.String() != h.node.udp.LocalAddr().String() {
		t.Errorf("INVITE came from %s, want the node's SIP socket %s", proxy.last, h.node.udp.LocalAddr())
	}
	for name, want := range map[string]string{
		"X-Sipedge-Conference": "conf-9", "X-Sipedge-Participant": "adp",
		"X-Sipedge-Role": "host", "X-Sipedge-Keep-Alive": "if-multiple", "Content-Type": "application/sdp",
	} {
		if got := header(inv, name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	// Issue 8 item 4: signed with the node secret (created in Redis by the
	// first reader) over what sipedge checks.
	secret, err := h.node.rdb.Get(context.Background(), "sipedge:node_secret").Result()
	if err != nil || secret == "" {
		t.Fatalf("node secret in redis: %q, %v", secret, err)
	}
	if err := nodeauth.Verify(inv, []string{secret}, time.Now(), nodeauth.DefaultWindow); err != nil {
		t.Errorf("X-Sipedge-Auth %q does not verify: %v", header(inv, nodeauth.Header), err)
	}
	from := inv.From()
	if from.Address.User != "conf-9" || from.Address.HostPort() != h.node.advertise() || !from.Params.Has("tag") {
		t.Errorf("From %s, want sip:conf-9@%s with a tag", from.Value(), h.node.advertise())
	}
	var offer sdp.SessionDescription
	if err := offer.Unmarshal(inv.Body()); err != nil || len(offer.MediaDescriptions) != 1 ||
		offer.MediaDescriptions[0].MediaName.Port.Value == 0 {
		t.Fatalf("offer %v:\n%s", err, inv.Body())
	}

	proxy.answer(inv, 100, "Trying", nil)
	rr := sip.NewHeader("Record-Route", "<sip:"+proxy.addr()+";lr>")
	contact := sip.NewHeader("Contact", "<sip:bob@"+proxy.addr()+">")
	ok := proxy.answer(inv, 200, "OK", []byte(audioOffer(portOf(callee), "sendrecv")), rr, contact)

	ack := proxy.request(sip.ACK)
	if r := ack.Route(); r == nil || r.Address.HostPort() != proxy.addr() {
		t.Errorf("ACK Route %v, want the Record-Route", r)
	}
	if ack.CallID().Value() != inv.CallID().Value() {
		t.Errorf("ACK for %s", ack.CallID().Value())
	}

	pkts, _ := readRTP(t, callee, 5)
	checkSilence(t, pkts)
	if got := h.node.activeCalls(); got != 1 {
		t.Errorf("active calls %d, want 1", got)
	}
	waitFor(t, "calls=1 in redis", func() bool { return h.mr.HGet(h.k.Node("cn1"), "calls") == "1" })
	if c := h.node.lookup(inv.CallID().Value()); c == nil || c.conf != "conf-9" {
		t.Errorf("call %+v, want one of conf-9", c)
	}

	// The callee hangs up through the proxy.
	bye := sip.NewRequest(sip.BYE, inv.Contact().Address)
	bye.AppendHeader(sip.NewHeader("Via", "SIP/2.0/UDP "+proxy.addr()+";branch=z9hG4bK-bye1"))
	bye.AppendHeader(sip.NewHeader("Max-Forwards", "70"))
	bye.AppendHeader(sip.NewHeader("From", ok.To().Value()))
	bye.AppendHeader(sip.NewHeader("To", inv.From().Value()))
	bye.AppendHeader(sip.NewHeader("Call-ID", inv.CallID().Value()))
	bye.AppendHeader(sip.NewHeader("CSeq", "1 BYE"))
	bye.SetBody(nil)
	proxy.send(proxy.last, bye)
	if res := proxy.response("1 BYE"); res.StatusCode != 200 {
		t.Fatalf("BYE answered %d", res.StatusCode)
	}
	waitFor(t, "call ended", func() bool { return len(h.logs.lines("call ended")) == 1 })
	end := h.logs.lines("call ended")[0]
	if end["call_id"] != inv.CallID().Value() || end["conf_id"] != "conf-9" || end["reason"] != "bye" {
		t.Errorf("call ended %v", end)
	}
	if sent, _ := end["rtp_sent"].(float64); sent < 5 {
		t.Errorf("rtp_sent %v", end["rtp_sent"])
	}
	if l := h.logs.lines("dialed call answered"); len(l) != 1 || l[0]["dial_id"] != "r1" || l[0]["status"] != 200.0 {
		t.Errorf("dialed call answered logs %v", l)
	}
	if h.mr.Exists(h.k.Dial("cn1")) {
		t.Error("dial queue not consumed")
	}
}

func TestConfnode_DialQueue_SkipsBadEntriesAndLogsRejection(t *testing.T) {
	proxy := newFakeProxy(t)
	h := startNode(t, config{RTP: true, Proxy: proxy.addr()}, nil)

	pushDial(t, h,
		`not json`,
		`{"conf":"c1","uri":"sip:bob@127.0.0.1","kind":"boss","id":"bad-kind"}`,
		`{"conf":"c1","uri":"mailto:bob@example.com","kind":"adp","id":"bad-uri"}`,
		`{"conf":"c1","uri":"sip:carol@127.0.0.1:5998","kind":"admin","role":"","keep_alive":"","id":"r2"}`)
	inv := proxy.request(sip.INVITE)
	if inv.Recipient.User != "carol" {
		t.Fatalf("INVITE to %s, want carol (bad entries skipped)", inv.Recipient.String())
	}
	for name, want := range map[string]string{"X-Sipedge-Participant": "admin", "X-Sipedge-Role": "<absent>",
		"X-Sipedge-Keep-Alive": "<absent>"} {
		if got := header(inv, name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	proxy.answer(inv, 486, "Busy Here", nil)
	if ack := proxy.request(sip.ACK); branch(ack) != branch(inv) {
		// the ACK of a failure belongs to the INVITE transaction
		t.Errorf("ACK branch %v, want the INVITE's", ack.Via())
	}
	waitFor(t, "dial failed log", func() bool { return len(h.logs.lines("dial failed")) == 1 })
	if l := h.logs.lines("dial failed")[0]; l["status"] != 486.0 || l["dial_id"] != "r2" || l["conf_id"] != "c1" {
		t.Errorf("dial failed log %v", l)
	}
	if got := len(h.logs.lines("dial request skipped")); got != 3 {
		t.Errorf("%d skipped entries logged, want 3", got)
	}
	if got := h.node.activeCalls(); got != 0 {
		t.Errorf("active calls %d", got)
	}
}

func TestConfnode_DialQueue_WithoutProxyRefusesAndSurvivesRedisErrors(t *testing.T) {
	h := startNode(t, config{}, nil)
	h.mr.SetError("LOADING Redis is loading the dataset in memory")
	waitFor(t, "redis error logged", func() bool { return len(h.logs.lines("dial queue unreadable, retrying with backoff")) == 1 })
	h.mr.SetError("")
	pushDial(t, h, `{"conf":"c1","uri":"sip:bob@127.0.0.1","kind":"adp","id":"r3"}`)
	waitFor(t, "recovery logged", func() bool { return len(h.logs.lines("dial queue readable again")) == 1 })
	waitFor(t, "refusal", func() bool { return len(h.logs.lines("dial request refused: no --proxy to call through")) == 1 })
	if h.mr.Exists(h.k.Dial("cn1")) {
		t.Error("entry left in the queue")
	}
}

func TestConfnode_DialQueue_ShutdownCancelsRingingCall(t *testing.T) {
	proxy := newFakeProxy(t)
	h := startNode(t, config{Proxy: proxy.addr()}, nil)
	pushDial(t, h, `{"conf":"c1","uri":"sip:bob@127.0.0.1:5997","kind":"adp","id":"r4"}`)
	inv := proxy.request(sip.INVITE)
	proxy.answer(inv, 180, "Ringing", nil)

	stopped := make(chan struct{})
	go func() { h.stop(); close(stopped) }()
	cancel := proxy.request(sip.CANCEL) // along the preloaded Route, to the proxy
	if cancel.CallID().Value() != inv.CallID().Value() || branch(cancel) != branch(inv) {
		t.Errorf("CANCEL %s does not match the INVITE", cancel.StartLine())
	}
	proxy.answer(cancel, 200, "OK", nil)
	proxy.answer(inv, 487, "Request Terminated", nil)
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("confnode did not stop")
	}
	if l := h.logs.lines("dial failed"); len(l) != 1 || l[0]["status"] != 487.0 {
		t.Errorf("dial failed logs %v", l)
	}
}

func TestParseDialRequest(t *testing.T) {
	valid := map[string]any{"conf": "c1", "uri": "sip:bob@10.0.0.1:5060", "kind": "adp", "role": "guest", "keep_alive": "no", "id": "x"}
	entry := func(k string, v any) string {
		m := map[string]any{}
		for a, b := range valid {
			m[a] = b
		}
		m[k] = v
		b, _ := json.Marshal(m)
		return string(b)
	}
	if _, uri, err := parseDialRequest(entry("id", "y")); err != nil || uri.Host != "10.0.0.1" || uri.Port != 5060 {
		t.Fatalf("valid entry: %v %v", uri, err)
	}
	for _, bad := range []struct{ field, value string }{
		{"conf", ""}, {"conf", "a b"}, {"kind", ""}, {"kind", "normal"}, {"role", "boss"},
		{"keep_alive", "maybe"}, {"uri", ""}, {"uri", "bob@host"}, {"uri", "tel:+123"},
	} {
		t.Run(bad.field+"="+bad.value, func(t *testing.T) {
			_, _, err := parseDialRequest(entry(bad.field, bad.value))
			if err == nil || !strings.Contains(err.Error(), bad.field) {
				t.Errorf("error %v, want one naming %s", err, bad.field)
			}
		})
	}
	if _, _, err := parseDialRequest(`{"conf":`); err == nil {
		t.Error("truncated JSON accepted")
	}
}

func TestFlags_RTPAndProxy(t *testing.T) {
	t.Setenv("CONFNODE_RTP", "false")
	t.Setenv("CONFNODE_PROXY", "sipedge-1:5060")
	cmd := newCommand()
	if err := applyEnv(cmd.Flags(), "CONFNODE_"); err != nil {
		t.Fatal(err)
	}
	if rtp, _ := cmd.Flags().GetBool("rtp"); rtp {
		t.Error("CONFNODE_RTP=false did not turn RTP off")
	}
	if p, _ := cmd.Flags().GetString("proxy"); p != "sipedge-1:5060" {
		t.Errorf("--proxy %q", p)
	}
	if rtp := newCommand().Flags().Lookup("rtp").DefValue; rtp != "true" {
		t.Errorf("--rtp defaults to %s, want true", rtp)
	}

	base := config{Redis: "r:6379", Name: "cn1", Capacity: 1, HeartbeatInterval: time.Second, DialTimeout: time.Second}
	for _, p := range []string{"sipedge", "sipedge:0", "sipedge:http", ":99999"} {
		c := base
		c.Proxy = p
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), "--proxy") {
			t.Errorf("--proxy %q: %v, want an error naming --proxy", p, err)
		}
	}
	base.Proxy = "127.0.0.1:5060"
	if err := base.validate(); err != nil {
		t.Error(err)
	}
}
