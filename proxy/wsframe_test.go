package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// clientFrame is a masked client frame (RFC 6455 §5.2) carrying payload.
func clientFrame(t testing.TB, fin bool, op ws.OpCode, payload []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	h := ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}
	if err := ws.WriteHeader(&b, h); err != nil {
		t.Fatal(err)
	}
	p := append([]byte(nil), payload...)
	ws.Cipher(p, h.Mask, 0)
	b.Write(p)
	return b.Bytes()
}

// TestWSFrames_PartialUntilTheFrameOrMessageEnds: a frame is partial from
// its first byte to its last (7-bit, 16-bit and 64-bit lengths, split
// anywhere); a message fragmented over frames stays partial until its FIN
// frame, control frames between its fragments included.
func TestWSFrames_PartialUntilTheFrameOrMessageEnds(t *testing.T) {
	small := clientFrame(t, true, ws.OpText, []byte("OPTIONS"))
	mid := clientFrame(t, true, ws.OpText, bytes.Repeat([]byte("a"), 300))
	big := func() []byte { // a 64-bit length header: 65536 bytes
		return clientFrame(t, true, ws.OpBinary, bytes.Repeat([]byte("b"), 65536))
	}()
	first := clientFrame(t, false, ws.OpText, []byte("INVITE "))
	ping := clientFrame(t, true, ws.OpPing, nil)
	last := clientFrame(t, true, ws.OpContinuation, []byte("sip:x SIP/2.0"))
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	type step struct {
		chunk   []byte
		partial bool
		between bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"whole frame", []step{{small, false, true}}},
		{"first byte only", []step{{small[:1], true, false}, {small[1:], false, true}}},
		{"header whole, payload half", []step{{small[:4], true, false}, {small[4:8], true, false}, {small[8:], false, true}}},
		{"16-bit length split in its length", []step{{mid[:3], true, false}, {mid[3:], false, true}}},
		{"64-bit length", []step{{big[:11], true, false}, {big[11:40000], true, false}, {big[40000:], false, true}}},
		{"a frame ends and the next begins", []step{{cat(small, mid[:5]), true, true}, {mid[5:], false, true}}},
		{"two frames at once", []step{{cat(small, mid), false, true}}},
		{"fragmented message", []step{{first, true, false}, {ping, true, false}, {last, false, true}}},
		{"fragmented message in one read", []step{{cat(first, ping, last), false, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f wsFrames
			for i, st := range tc.steps {
				between := f.feed(st.chunk)
				if f.partial() != st.partial || between != st.between {
					t.Fatalf("after chunk %d: partial %v between %v, want %v %v", i, f.partial(), between, st.partial, st.between)
				}
			}
		})
	}
}

// The upgrade request and the first frame may come in one read: the
// frame bytes after the blank line are followed.
func TestGuardConn_FramesAfterTheUpgradeInTheSameRead(t *testing.T) {
	c := &guardConn{}
	req := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	frame := clientFrame(t, true, ws.OpText, []byte("OPTIONS"))
	for _, split := range []int{len(req), len(req) - 1, len(req) - 2, len(req) + 1} {
		c = &guardConn{}
		all := append([]byte(req), frame[:3]...)
		a, b := all[:split], all[split:]
		now := time.Now()
		for _, chunk := range [][]byte{a, b} {
			rest := chunk
			if !c.upgraded {
				rest = rest[c.sawHandshake(rest):]
			}
			if c.upgraded {
				c.noteFrames(rest, now)
			}
		}
		if !c.upgraded || !c.frames.partial() || c.partialSince.IsZero() {
			t.Errorf("split at %d: upgraded %v partial %v since %v; want the frame's first bytes seen", split, c.upgraded, c.frames.partial(), c.partialSince)
		}
	}
}

// wsClient dials the WS (or WSS) listener addr with a real handshake and
// returns the raw connection under it.
func wsClient(t *testing.T, scheme, addr string) net.Conn {
	t.Helper()
	d := ws.Dialer{Protocols: []string{"sip"}, TLSConfig: &tls.Config{InsecureSkipVerify: true}} // test certificate
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, _, _, err := d.Dial(ctx, scheme+"://"+addr)
	if err != nil {
		t.Fatalf("WebSocket handshake with %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wsOptions(addr, local, id string) []byte {
	return []byte("OPTIONS sip:" + addr + " SIP/2.0\r\nVia: SIP/2.0/WS " + local + ";branch=z9hG4bK-" + id + "\r\n" +
		"From: <sip:a@example.com>;tag=a\r\nTo: <sip:" + addr + ">\r\nCall-ID: ws-frame-" + id + "\r\nCSeq: 1 OPTIONS\r\n" +
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
}

// TestStreamGuard_PartialWebSocketFrameCutAtTheFrameTimeout: on the WS and
// WSS listeners a client that sends the first part of a frame (header
// and half its payload), or the first frame of a fragmented message, and
// stalls is closed at ws_frame_timeout (counted as frame_timeout), not at
// the hour-long idle timeout; a client that sends a frame slowly but
// whole within the bound gets its answer, and may then stay silent past
// the bound (between messages only the idle timeout holds).
func TestStreamGuard_PartialWebSocketFrameCutAtTheFrameTimeout(t *testing.T) {
	const bound = 800 * time.Millisecond
	px := startSecureProxy(t, WireOptions{TCPHeaderTimeout: time.Hour, TCPIdleTimeout: time.Hour, WSFrameTimeout: bound})
	_, wsAddr, wssAddr := px.SecureAddrs()
	cut := px.metrics.tcpClosed.WithLabelValues(tcpClosedFrameTimeout)
	for _, tc := range []struct{ scheme, addr string }{{"ws", wsAddr}, {"wss", wssAddr}} {
		for _, stall := range []struct {
			name string
			sent func(c net.Conn) []byte
		}{
			{"half a frame", func(c net.Conn) []byte {
				f := clientFrame(t, true, ws.OpText, wsOptions(tc.addr, c.LocalAddr().String(), "half"))
				return f[:len(f)/2]
			}},
			{"first fragment of a message", func(c net.Conn) []byte {
				return clientFrame(t, false, ws.OpText, []byte("OPTIONS sip:"))
			}},
		} {
			t.Run(tc.scheme+"/"+stall.name, func(t *testing.T) {
				before := testutil.ToFloat64(cut)
				c := wsClient(t, tc.scheme, tc.addr)
				if _, err := c.Write(stall.sent(c)); err != nil {
					t.Fatal(err)
				}
				d, closed := readsEOFWithin(c, 10*time.Second)
				if !closed || d < bound-100*time.Millisecond {
					t.Fatalf("closed=%v after %v; want closed at the %v frame timeout", closed, d, bound)
				}
				waitFor(t, func() bool { return testutil.ToFloat64(cut) == before+1 }, "the cut counted as frame_timeout")
			})
		}
		t.Run(tc.scheme+"/slow but whole", func(t *testing.T) {
			before := testutil.ToFloat64(cut)
			c := wsClient(t, tc.scheme, tc.addr)
			for i, id := range []string{"slow1", "slow2"} {
				f := clientFrame(t, true, ws.OpText, wsOptions(tc.addr, c.LocalAddr().String(), id))
				step := len(f)/4 + 1
				for off := 0; off < len(f); off += step {
					if _, err := c.Write(f[off:min(off+step, len(f))]); err != nil {
						t.Fatal(err)
					}
					time.Sleep(bound / 8) // four pieces: half the bound in all
				}
				_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
				msg, err := wsutil.ReadServerText(c)
				if err != nil || !strings.HasPrefix(string(msg), "SIP/2.0 200") {
					t.Fatalf("OPTIONS %d sent slowly within the bound: %q %v", i+1, msg, err)
				}
				if i == 0 {
					time.Sleep(bound + 300*time.Millisecond) // silent between messages
				}
			}
			if testutil.ToFloat64(cut) != before {
				t.Error("a connection was cut by the frame timeout")
			}
		})
	}
}
