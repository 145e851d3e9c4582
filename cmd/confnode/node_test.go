package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/sdp/v3"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
)

// syncBuffer collects log lines from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the JSON log lines with the given message.
func (s *syncBuffer) lines(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(s.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

type harness struct {
	node *node
	mr   *miniredis.Miniredis
	rdb  *redis.Client
	logs *syncBuffer
	k    keys.Keys
	stop func() // stops the node and waits for it; safe to call twice
}

// startNode runs a confnode on a free loopback port against miniredis; it
// stops with the test. setup runs against Redis before the node starts.
func startNode(t *testing.T, cfg config, setup func(*miniredis.Miniredis)) *harness {
	t.Helper()
	mr := miniredis.RunT(t)
	if setup != nil {
		setup(mr)
	}
	cfg.Redis = mr.Addr()
	if cfg.Name == "" {
		cfg.Name = "cn1"
	}
	cfg.Listen = "127.0.0.1:0"
	cfg.Prefix = keys.DefaultPrefix
	cfg.Site, cfg.Server = "lab", "srv1"
	if cfg.Weight == 0 {
		cfg.Weight = 100
	}
	cfg.Capacity = 10
	cfg.HeartbeatInterval = 50 * time.Millisecond
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	// Registered first, so it runs last: the log of a failed test, shutdown included.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("confnode log:\n%s", logs.String())
		}
	})
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	n, err := newNode(cfg, zerolog.New(logs), rdb)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Error("confnode did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return &harness{node: n, mr: mr, rdb: rdb, logs: logs, k: keys.New(cfg.Prefix), stop: stop}
}

// newCaller is a sipgo UA on loopback that places calls to the node.
func newCaller(t *testing.T) *sipgo.DialogUA {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	return &sipgo.DialogUA{
		Client:     client,
		ContactHDR: sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "127.0.0.1"}},
	}
}

const offer = "v=0\r\n" +
	"o=alice 1 1 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"c=IN IP4 127.0.0.1\r\n" +
	"t=0 0\r\n" +
	"m=audio 40000 RTP/AVP 0 8 101\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"m=video 40002 RTP/AVP 96\r\n" +
	"a=rtpmap:96 H264/90000\r\n"

func (h *harness) uri(user string) sip.Uri {
	return sip.Uri{Scheme: "sip", User: user, Host: h.node.advHost, Port: h.node.advPort}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConfnode_InviteAckBye_AnswersWithSDPAndTracksCall(t *testing.T) {
	h := startNode(t, config{}, nil)
	caller := newCaller(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	sess, err := caller.Invite(ctx, h.uri("conf-42"), []byte(offer),
		sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	// The 100 may reach sipgo's client after the 200 (it handles each
	// datagram in its own goroutine); the raw UDP test checks the order.
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("wait answer: %v", err)
	}
	res := sess.InviteResponse
	if res.StatusCode != 200 {
		t.Fatalf("status %d, want 200", res.StatusCode)
	}
	if ct := res.ContentType(); ct == nil || ct.Value() != "application/sdp" {
		t.Errorf("Content-Type %v, want application/sdp", ct)
	}
	if c := res.Contact(); c == nil || c.Address.Host != "127.0.0.1" || c.Address.Port != h.node.advPort {
		t.Errorf("Contact %v, want the node's own address", c)
	}

	var ans sdp.SessionDescription
	if err := ans.Unmarshal(res.Body()); err != nil {
		t.Fatalf("answer SDP does not parse: %v\n%s", err, res.Body())
	}
	if ans.ConnectionInformation == nil || ans.ConnectionInformation.Address.Address != "127.0.0.1" {
		t.Errorf("c= %v, want 127.0.0.1", ans.ConnectionInformation)
	}
	if len(ans.MediaDescriptions) != 2 {
		t.Fatalf("answer has %d m-lines, want 2 (one per offered stream)", len(ans.MediaDescriptions))
	}
	audio, video := ans.MediaDescriptions[0], ans.MediaDescriptions[1]
	if audio.MediaName.Media != "audio" || audio.MediaName.Port.Value == 0 ||
		strings.Join(audio.MediaName.Formats, " ") != "0" {
		t.Errorf("audio m-line %v, want PCMU on a real port", audio.MediaName)
	}
	if rtpmap, _ := audio.Attribute("rtpmap"); rtpmap != "0 PCMU/8000" {
		t.Errorf("rtpmap %q, want 0 PCMU/8000", rtpmap)
	}
	if video.MediaName.Media != "video" || video.MediaName.Port.Value != 0 {
		t.Errorf("video m-line %v, want rejected with port 0", video.MediaName)
	}
	if got := h.node.activeCalls(); got != 1 {
		t.Errorf("active calls %d, want 1", got)
	}

	if err := sess.Ack(ctx); err != nil {
		t.Fatalf("ack: %v", err)
	}
	waitFor(t, "call confirmed log", func() bool { return len(h.logs.lines("call confirmed")) == 1 })
	waitFor(t, "calls=1 in redis", func() bool {
		return h.mr.HGet(h.k.Node("cn1"), "calls") == "1" && h.mr.HGet(h.k.Node("cn1"), "load") == "0.100"
	})

	if err := sess.Bye(ctx); err != nil {
		t.Fatalf("bye: %v", err)
	}
	waitFor(t, "call ended", func() bool { return h.node.activeCalls() == 0 })
	waitFor(t, "calls=0 in redis", func() bool { return h.mr.HGet(h.k.Node("cn1"), "calls") == "0" })

	callID := sess.InviteRequest.CallID().Value()
	for _, msg := range []string{"call started", "call answered", "call confirmed", "call ended"} {
		lines := h.logs.lines(msg)
		if len(lines) != 1 {
			t.Errorf("%d %q log lines, want 1", len(lines), msg)
			continue
		}
		if lines[0]["call_id"] != callID || lines[0]["conf_id"] != "conf-42" {
			t.Errorf("%q log: call_id=%v conf_id=%v, want %s conf-42", msg, lines[0]["call_id"], lines[0]["conf_id"], callID)
		}
	}
}

// TestConfnode_RawUDP_100Then200 speaks plain SIP over a UDP socket, so the
// order of what the node sends is observable.
func TestConfnode_RawUDP_100Then200(t *testing.T) {
	h := startNode(t, config{}, nil)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	node, _ := net.ResolveUDPAddr("udp", h.node.advertise())
	local := conn.LocalAddr().String()

	send := func(msg string) {
		t.Helper()
		if _, err := conn.WriteTo([]byte(strings.ReplaceAll(msg, "\n", "\r\n")), node); err != nil {
			t.Fatal(err)
		}
	}
	// read returns the next response whose CSeq is cseq.
	read := func(cseq string) *sip.Response {
		t.Helper()
		buf := make([]byte, 65535)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				t.Fatalf("waiting for %s response: %v", cseq, err)
			}
			msg, err := sip.ParseMessage(buf[:n])
			if err != nil {
				t.Fatalf("parse %q: %v", buf[:n], err)
			}
			if res, ok := msg.(*sip.Response); ok && res.CSeq().Value() == cseq {
				return res
			}
		}
	}
	head := func(method, cseq, to string) string {
		return method + " sip:conf-raw@" + h.node.advertise() + " SIP/2.0\n" +
			"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK-" + strings.ReplaceAll(cseq, " ", "-") + "\n" +
			"Max-Forwards: 70\n" +
			"From: <sip:raw@127.0.0.1>;tag=raw1\n" +
			"To: " + to + "\n" +
			"Call-ID: raw-call-1\n" +
			"CSeq: " + cseq + "\n" +
			"Contact: <sip:raw@" + local + ">\n"
	}

	body := strings.ReplaceAll(offer, "\r\n", "\n")
	send(head("INVITE", "1 INVITE", "<sip:conf-raw@127.0.0.1>") +
		"Content-Type: application/sdp\nContent-Length: " + strconv.Itoa(len(offer)) + "\n\n" + body)
	if res := read("1 INVITE"); res.StatusCode != 100 {
		t.Fatalf("first response %d, want 100", res.StatusCode)
	}
	ok := read("1 INVITE")
	if ok.StatusCode != 200 {
		t.Fatalf("second response %d, want 200", ok.StatusCode)
	}
	var ans sdp.SessionDescription
	if err := ans.Unmarshal(ok.Body()); err != nil {
		t.Fatalf("answer SDP: %v", err)
	}
	to := ok.To().String()[len("To: "):]
	send(head("ACK", "1 ACK", to) + "Content-Length: 0\n\n")
	send(head("BYE", "2 BYE", to) + "Content-Length: 0\n\n")
	if res := read("2 BYE"); res.StatusCode != 200 {
		t.Fatalf("BYE answered %d, want 200", res.StatusCode)
	}
	waitFor(t, "call ended", func() bool { return h.node.activeCalls() == 0 })
}

func TestConfnode_Cancel_Gets487AndEndsCall(t *testing.T) {
	h := startNode(t, config{AnswerDelay: 5 * time.Second}, nil)
	caller := newCaller(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	sess, err := caller.Invite(ctx, h.uri("conf-7"), []byte(offer), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	ringCtx, hangup := context.WithCancel(ctx)
	err = sess.WaitAnswer(ringCtx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
		if r.StatusCode == 180 {
			hangup() // caller gives up while it rings: sipgo sends CANCEL
		}
		return nil
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("wait answer: %v, want context.Canceled", err)
	}
	if sess.InviteResponse == nil || sess.InviteResponse.StatusCode != 487 {
		t.Fatalf("final response %v, want 487", sess.InviteResponse)
	}
	waitFor(t, "canceled call removed", func() bool { return h.node.activeCalls() == 0 })
	// The call is forgotten just before its end is logged: wait for the line.
	waitFor(t, "call ended logged", func() bool { return len(h.logs.lines("call ended")) == 1 })
	lines := h.logs.lines("call ended")
	if len(lines) != 1 || lines[0]["reason"] != "canceled" {
		t.Errorf("call ended logs %v, want one with reason canceled", lines)
	}
}

func TestConfnode_Registration_WritesNodeHashAndHeartbeat(t *testing.T) {
	k := keys.New("")
	var events []string
	var evMu sync.Mutex
	h := startNode(t, config{Weight: 50}, func(mr *miniredis.Miniredis) {
		// Operator state from before a restart must survive it.
		mr.HSet(k.Node("cn1"), "weight", "7", "maintenance", "1")
	})
	// Subscribe late: the first publish may already be gone, so force a
	// re-registration below and expect its publish.
	sub := h.rdb.Subscribe(context.Background(), k.Events())
	defer sub.Close()
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	go func() {
		for m := range sub.Channel() {
			evMu.Lock()
			events = append(events, m.Payload)
			evMu.Unlock()
		}
	}()

	key := k.Node("cn1")
	waitFor(t, "registration", func() bool {
		ok, _ := h.mr.SIsMember(k.Nodes(), "cn1")
		return ok && h.mr.HGet(key, "heartbeat") != ""
	})
	if ok, _ := h.mr.SIsMember(k.Nodes(), "cn1"); !ok {
		t.Error("cn1 not in the nodes set")
	}
	want := map[string]string{
		"addr": h.node.advertise(), "transport": "udp", "site": "lab", "server": "srv1",
		"weight": "7", "maintenance": "1", "capable": "1", "load": "0.000", "calls": "0",
	}
	for f, v := range want {
		if got := h.mr.HGet(key, f); got != v {
			t.Errorf("%s = %q, want %q", f, got, v)
		}
	}
	first, _ := strconv.ParseInt(h.mr.HGet(key, "heartbeat"), 10, 64)
	if age := time.Since(time.UnixMilli(first)); age < 0 || age > 5*time.Second {
		t.Errorf("heartbeat %d is %v old", first, age)
	}
	waitFor(t, "heartbeat refresh", func() bool {
		hb, _ := strconv.ParseInt(h.mr.HGet(key, "heartbeat"), 10, 64)
		return hb > first
	})

	// Redis lost its data (failover to an empty replica): the node comes back.
	h.mr.FlushAll()
	waitFor(t, "re-registration", func() bool {
		ok, _ := h.mr.SIsMember(k.Nodes(), "cn1")
		return ok && h.mr.HGet(key, "weight") == "50" && h.mr.HGet(key, "maintenance") == "0"
	})
	waitFor(t, "node event", func() bool {
		evMu.Lock()
		defer evMu.Unlock()
		return len(events) > 0 && events[len(events)-1] == "node:cn1"
	})
}

func TestConfnode_OptionsRegisterSubscribe(t *testing.T) {
	h := startNode(t, config{}, nil)
	caller := newCaller(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	do := func(t *testing.T, method sip.RequestMethod, hdrs ...sip.Header) *sip.Response {
		t.Helper()
		req := sip.NewRequest(method, h.uri("bob"))
		for _, hd := range hdrs {
			req.AppendHeader(hd)
		}
		res, err := caller.Client.Do(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if res.StatusCode != 200 {
			t.Fatalf("%s: status %d, want 200", method, res.StatusCode)
		}
		return res
	}

	t.Run("options", func(t *testing.T) {
		res := do(t, sip.OPTIONS)
		if a := res.GetHeader("Allow"); a == nil || !strings.Contains(a.Value(), "INVITE") {
			t.Errorf("Allow %v", a)
		}
	})
	t.Run("register echoes contact and expires", func(t *testing.T) {
		res := do(t, sip.REGISTER,
			sip.NewHeader("Contact", "<sip:bob@127.0.0.1:5099>"), sip.NewHeader("Expires", "600"))
		if c := res.Contact(); c == nil || c.Address.User != "bob" || c.Address.Port != 5099 {
			t.Errorf("Contact %v", c)
		}
		if e := res.GetHeader("Expires"); e == nil || e.Value() != "600" {
			t.Errorf("Expires %v, want 600", e)
		}
	})
	t.Run("subscribe", func(t *testing.T) {
		res := do(t, sip.SUBSCRIBE, sip.NewHeader("Event", "conference"),
			sip.NewHeader("Contact", "<sip:bob@127.0.0.1:5099>"), sip.NewHeader("Expires", "300"))
		if e := res.GetHeader("Expires"); e == nil || e.Value() != "300" {
			t.Errorf("Expires %v, want 300", e)
		}
	})
	t.Run("bye for unknown call is 481", func(t *testing.T) {
		req := sip.NewRequest(sip.BYE, h.uri("bob"))
		res, err := caller.Client.Do(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 481 {
			t.Errorf("status %d, want 481", res.StatusCode)
		}
	})
}

func TestAnswerSDP(t *testing.T) {
	tests := []struct {
		name    string
		offer   string
		wantErr error
		wantPT  string
		wantDir string
	}{
		{name: "late offer", wantPT: "0", wantDir: "sendrecv"},
		{name: "pcmu static", offer: offer, wantPT: "0", wantDir: "sendrecv"},
		{name: "pcmu dynamic and sendonly", offer: "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
			"m=audio 4000 RTP/AVP 97\r\na=rtpmap:97 PCMU/8000\r\na=sendonly\r\n", wantPT: "97", wantDir: "recvonly"},
		{name: "no pcmu", offer: "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
			"m=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n", wantErr: errNoCommonCodec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := answerSDP([]byte(tt.offer), "127.0.0.1", 30000, 5, 6)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var sd sdp.SessionDescription
			if err := sd.Unmarshal(b); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			m := sd.MediaDescriptions[0]
			if m.MediaName.Port.Value != 30000 || m.MediaName.Formats[0] != tt.wantPT {
				t.Errorf("m= %v, want port 30000 pt %s", m.MediaName, tt.wantPT)
			}
			if _, ok := m.Attribute(tt.wantDir); !ok {
				t.Errorf("direction %s missing in %s", tt.wantDir, b)
			}
			if sd.Origin.SessionID != 5 || sd.Origin.SessionVersion != 6 {
				t.Errorf("o= %v", sd.Origin)
			}
		})
	}
}

// answerCall places a call to conf and returns the established session.
func answerCall(t *testing.T, ctx context.Context, h *harness, caller *sipgo.DialogUA, conf string) *sipgo.DialogClientSession {
	t.Helper()
	sess, err := caller.Invite(ctx, h.uri(conf), []byte(offer), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("wait answer: %v", err)
	}
	if err := sess.Ack(ctx); err != nil {
		t.Fatalf("ack: %v", err)
	}
	return sess
}

func mediaPort(t *testing.T, body []byte) (port int, version uint64) {
	t.Helper()
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(body); err != nil {
		t.Fatalf("sdp: %v\n%s", err, body)
	}
	return sd.MediaDescriptions[0].MediaName.Port.Value, sd.Origin.SessionVersion
}

func TestConfnode_ReInvite_KeepsMediaPort(t *testing.T) {
	h := startNode(t, config{}, nil)
	caller := newCaller(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess := answerCall(t, ctx, h, caller, "conf-re")
	port, version := mediaPort(t, sess.InviteResponse.Body())

	reinvite := sip.NewRequest(sip.INVITE, sess.InviteResponse.Contact().Address)
	reinvite.SetBody([]byte(offer))
	reinvite.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res, err := sess.Do(ctx, reinvite)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("re-INVITE answered %d", res.StatusCode)
	}
	port2, version2 := mediaPort(t, res.Body())
	if port2 != port || version2 != version+1 {
		t.Errorf("re-INVITE answer port %d version %d, want port %d version %d", port2, version2, port, version+1)
	}
	ack := sip.NewRequest(sip.ACK, sess.InviteResponse.Contact().Address)
	ack.AppendHeader(sip.HeaderClone(res.CSeq()))
	ack.CSeq().MethodName = sip.ACK
	if err := sess.WriteRequest(ack); err != nil {
		t.Fatal(err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "call ended", func() bool { return h.node.activeCalls() == 0 })
}

func TestConfnode_TCP_AnswersOptionsAndInvite(t *testing.T) {
	h := startNode(t, config{}, nil)
	caller := newCaller(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	uri := h.uri("conf-tcp")
	uri.UriParams = sip.NewParams()
	uri.UriParams.Add("transport", "tcp")
	sess, err := caller.Invite(ctx, uri, []byte(offer), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if tp, _ := sess.InviteResponse.Contact().Address.UriParams.Get("transport"); tp != "tcp" {
		t.Errorf("Contact %v, want transport=tcp", sess.InviteResponse.Contact())
	}
	if err := sess.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "call ended", func() bool { return h.node.activeCalls() == 0 })
}

func TestConfnode_Shutdown_HangsUpActiveCalls(t *testing.T) {
	h := startNode(t, config{}, nil)

	// The caller must answer the node's BYE, so it runs a server too.
	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	srv, _ := sipgo.NewServer(ua)
	client, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(conn)
	port := conn.LocalAddr().(*net.UDPAddr).Port
	caller := &sipgo.DialogUA{Client: client,
		ContactHDR: sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "127.0.0.1", Port: port}}}
	byes := make(chan string, 1)
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		byes <- req.CallID().Value()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess := answerCall(t, ctx, h, caller, "conf-down")
	waitFor(t, "call confirmed", func() bool { return len(h.logs.lines("call confirmed")) == 1 })

	// Stop the node the way SIGTERM does.
	stopped := make(chan struct{})
	go func() { h.stop(); close(stopped) }()
	select {
	case id := <-byes:
		if id != sess.InviteRequest.CallID().Value() {
			t.Errorf("BYE for %s", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no BYE at shutdown")
	}
	<-stopped
	if lines := h.logs.lines("call ended"); len(lines) != 1 || lines[0]["reason"] != "shutdown" {
		t.Errorf("call ended logs %v", lines)
	}
}

func TestMain(m *testing.M) {
	// The callers' sipgo stacks log through sipgo's default slog logger.
	sip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

func TestConfnode_Shutdown_RefusesRingingCalls(t *testing.T) {
	h := startNode(t, config{AnswerDelay: 10 * time.Second}, nil)
	caller := newCaller(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := caller.Invite(ctx, h.uri("conf-ring"), []byte(offer), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	err = sess.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
		if r.StatusCode == 180 {
			go h.stop()
		}
		return nil
	}})
	var rejected *sipgo.ErrDialogResponse
	if !errors.As(err, &rejected) || rejected.Res.StatusCode != 503 {
		t.Fatalf("wait answer: %v, want 503", err)
	}
}

func TestFlags_EnvFillsWhatTheCommandLineLeavesOut(t *testing.T) {
	t.Setenv("CONFNODE_REDIS", "127.0.0.1:6390")
	t.Setenv("CONFNODE_HEARTBEAT_INTERVAL", "250ms")
	t.Setenv("CONFNODE_SITE", "from-env")
	cmd := newCommand()
	if err := cmd.Flags().Parse([]string{"--site", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(cmd.Flags(), "CONFNODE_"); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{"redis": "127.0.0.1:6390", "heartbeat-interval": "250ms", "site": "from-flag"} {
		if got := cmd.Flags().Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}

	t.Setenv("CONFNODE_WEIGHT", "heavy")
	if err := applyEnv(newCommand().Flags(), "CONFNODE_"); err == nil || !strings.Contains(err.Error(), "CONFNODE_WEIGHT") {
		t.Errorf("bad env value: %v, want an error naming CONFNODE_WEIGHT", err)
	}
}
