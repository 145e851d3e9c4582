package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/rs/zerolog"
)

// udpPeer is a socket on loopback standing in for a remote party's media.
func udpPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func portOf(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }

// audioOffer is a one-stream PCMU offer for 127.0.0.1:port.
func audioOffer(port int, direction string) string {
	return "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		fmt.Sprintf("m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=%s\r\n", port, direction)
}

// readRTP reads n RTP packets from c, failing after 2 s.
func readRTP(t *testing.T, c *net.UDPConn, n int) ([]rtp.Packet, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 1500)
	var out []rtp.Packet
	var from netip.AddrPort
	for len(out) < n {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("waiting for RTP on %s (%d of %d): %v", c.LocalAddr(), len(out), n, err)
		}
		var p rtp.Packet
		if err := p.Unmarshal(append([]byte(nil), buf[:m]...)); err != nil {
			t.Fatalf("not RTP: %v", err)
		}
		out, from = append(out, p), src
	}
	return out, from
}

// quiet asserts that nothing arrives on c for d, after dropping what was
// already in flight.
func quiet(t *testing.T, c *net.UDPConn, d time.Duration) {
	t.Helper()
	buf := make([]byte, 1500)
	for drain := time.Now().Add(3 * rtpPtime); time.Now().Before(drain); {
		_ = c.SetReadDeadline(drain)
		_, _, _ = c.ReadFrom(buf)
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	if n, _, err := c.ReadFrom(buf); err == nil {
		t.Fatalf("%d bytes arrived on %s, want silence", n, c.LocalAddr())
	}
}

func checkSilence(t *testing.T, pkts []rtp.Packet) {
	t.Helper()
	for i, p := range pkts {
		if p.Version != 2 || p.PayloadType != 0 || len(p.Payload) != 160 || strings.Trim(string(p.Payload), "\xff") != "" {
			t.Fatalf("packet %d: v%d pt %d %d bytes, want v2 PCMU 160 bytes of 0xFF", i, p.Version, p.PayloadType, len(p.Payload))
		}
		if i == 0 {
			continue
		}
		prev := pkts[i-1]
		if p.SSRC != prev.SSRC || p.SequenceNumber != prev.SequenceNumber+1 || p.Timestamp != prev.Timestamp+160 {
			t.Fatalf("packet %d: ssrc %d seq %d ts %d after ssrc %d seq %d ts %d", i,
				p.SSRC, p.SequenceNumber, p.Timestamp, prev.SSRC, prev.SequenceNumber, prev.Timestamp)
		}
	}
}

// reinvite sends a re-INVITE with body in sess and ACKs its 200.
func reinvite(t *testing.T, ctx context.Context, sess *sipgo.DialogClientSession, body string) {
	t.Helper()
	req := sip.NewRequest(sip.INVITE, sess.InviteResponse.Contact().Address)
	req.SetBody([]byte(body))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res, err := sess.Do(ctx, req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("re-INVITE: %v %v", res, err)
	}
	ack := sip.NewRequest(sip.ACK, sess.InviteResponse.Contact().Address)
	ack.AppendHeader(sip.HeaderClone(res.CSeq()))
	ack.CSeq().MethodName = sip.ACK
	if err := sess.WriteRequest(ack); err != nil {
		t.Fatal(err)
	}
}

func TestConfnode_RTP_FlowsFromAnswerFollowsLatchingAndSDP(t *testing.T) {
	h := startNode(t, config{RTP: true}, nil)
	caller := newCaller(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	a, b, c := udpPeer(t), udpPeer(t), udpPeer(t)

	sess, err := caller.Invite(ctx, h.uri("conf-rtp"), []byte(audioOffer(portOf(a), "sendrecv")),
		sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	nodePort, _ := mediaPort(t, sess.InviteResponse.Body())

	// RTP starts with the 200, before any ACK.
	pkts, from := readRTP(t, a, 5)
	checkSilence(t, pkts)
	if int(from.Port()) != nodePort {
		t.Errorf("RTP from port %d, want the answered media port %d", from.Port(), nodePort)
	}
	if err := sess.Ack(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("symmetric latching", func(t *testing.T) {
		in := rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 7, SequenceNumber: 1}, Payload: make([]byte, 160)}
		raw, _ := in.Marshal()
		if _, err := b.WriteToUDPAddrPort(raw, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(nodePort))); err != nil {
			t.Fatal(err)
		}
		checkSilence(t, func() []rtp.Packet { p, _ := readRTP(t, b, 3); return p }())
	})
	t.Run("sendonly offer pauses", func(t *testing.T) {
		reinvite(t, ctx, sess, audioOffer(portOf(a), "sendonly"))
		quiet(t, b, 150*time.Millisecond)
		quiet(t, a, 50*time.Millisecond)
	})
	t.Run("new address resumes there", func(t *testing.T) {
		reinvite(t, ctx, sess, audioOffer(portOf(c), "sendrecv"))
		checkSilence(t, func() []rtp.Packet { p, _ := readRTP(t, c, 3); return p }())
	})

	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "call ended", func() bool { return len(h.logs.lines("call ended")) == 1 })
	quiet(t, c, 100*time.Millisecond)
	end := h.logs.lines("call ended")[0]
	if sent, _ := end["rtp_sent"].(float64); sent < 10 {
		t.Errorf("rtp_sent %v, want the packets sent", end["rtp_sent"])
	}
	if got, _ := end["rtp_received"].(float64); got != 1 {
		t.Errorf("rtp_received %v, want 1", end["rtp_received"])
	}
}

func TestConfnode_RTPDisabled_SendsNothing(t *testing.T) {
	h := startNode(t, config{RTP: false}, nil)
	a := udpPeer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	caller := newCaller(t)
	sess, err := caller.Invite(ctx, h.uri("conf-quiet"), []byte(audioOffer(portOf(a), "sendrecv")),
		sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	_ = sess.Ack(ctx)
	quiet(t, a, 150*time.Millisecond)
	_ = sess.Bye(ctx)
	waitFor(t, "call ended", func() bool { return len(h.logs.lines("call ended")) == 1 })
	if end := h.logs.lines("call ended")[0]; end["rtp_sent"] != 0.0 || end["rtp_received"] != 0.0 {
		t.Errorf("call ended %v, want rtp_sent=0 rtp_received=0", end)
	}
}

func TestRemoteMedia(t *testing.T) {
	const head = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\n"
	tests := []struct {
		name     string
		sdp      string
		wantDst  string
		wantPT   uint8
		wantHeld bool
		wantErr  bool
	}{
		{name: "session c=", sdp: head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", wantDst: "10.0.0.1:4000"},
		{name: "media c= wins", sdp: head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\n",
			wantDst: "10.0.0.2:4000"},
		{name: "first usable audio stream", sdp: head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n" +
			"m=audio 4002 RTP/AVP 8\r\nm=audio 4004 RTP/AVP 97\r\na=rtpmap:97 PCMU/8000\r\n", wantDst: "10.0.0.1:4004", wantPT: 97},
		{name: "hold address", sdp: head + "c=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", wantDst: "0.0.0.0:4000", wantHeld: true},
		{name: "remote sendonly", sdp: head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n",
			wantDst: "10.0.0.1:4000", wantHeld: true},
		{name: "session inactive", sdp: head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\na=inactive\r\nm=audio 4000 RTP/AVP 0\r\n",
			wantDst: "10.0.0.1:4000", wantHeld: true},
		{name: "remote recvonly", sdp: head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\n",
			wantDst: "10.0.0.1:4000"},
		{name: "ipv6", sdp: head + "c=IN IP6 ::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", wantDst: "[::1]:4000"},
		{name: "no pcmu", sdp: head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n", wantHeld: true, wantErr: true},
		{name: "hostname", sdp: head + "c=IN IP4 media.example.com\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", wantHeld: true, wantErr: true},
		{name: "garbage", sdp: "hello", wantHeld: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst, pt, held, err := remoteMedia([]byte(tt.sdp))
			if (err != nil) != tt.wantErr || held != tt.wantHeld {
				t.Fatalf("held %v err %v, want held %v err %v", held, err, tt.wantHeld, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if dst.String() != tt.wantDst || pt != tt.wantPT {
				t.Errorf("dst %s pt %d, want %s pt %d", dst, pt, tt.wantDst, tt.wantPT)
			}
		})
	}
	if _, _, _, err := remoteMedia([]byte(head + "c=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\n")); !errors.Is(err, errNoCommonCodec) {
		t.Errorf("video only: %v, want errNoCommonCodec", err)
	}
}

func TestRTPStream_StopEndsLoopsAndIsIdempotent(t *testing.T) {
	conn := udpPeer(t)
	peer := udpPeer(t)
	s, err := newRTPStream(conn, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	s.update([]byte(audioOffer(portOf(peer), "sendrecv")))
	s.start()
	readRTP(t, peer, 2)
	done := make(chan struct{})
	go func() { s.stop(); s.stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("stop did not return: a loop is still running")
	}
	s.start() // no effect after stop
	quiet(t, peer, 100*time.Millisecond)
	if sent, _ := s.counts(); sent < 2 {
		t.Errorf("sent %d, want >= 2", sent)
	}
}
