package app

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/internal/keys"
)

// Every goroutine the daemon starts (the proxy, the watchers, the ledger,
// the heartbeat, the drain enforcer, media, the admin server) is stopped
// and waited for by Run.
func TestRun_NoGoroutineOutlivesIt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		media string // media_ports; "" anchoring off
	}{
		{"anchoring off", ""},
		{"anchoring on", "47610-47629"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			before := goleak.IgnoreCurrent()
			cfg := config.Default()
			cfg.Name, cfg.Server, cfg.Redis = "leak-1", "leak-1", mr.Addr()
			cfg.Listen, cfg.Admin, cfg.MediaPorts = "127.0.0.1:0", "127.0.0.1:0", tc.media
			cfg.ProbeInterval = 50 * time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, cfg, zerolog.Nop()) }()
			k := keys.New(cfg.Prefix)
			deadline := time.Now().Add(10 * time.Second)
			for !mr.Exists(k.Instance(cfg.Name)) { // the first heartbeat: every part runs
				if time.Now().After(deadline) {
					cancel()
					t.Fatalf("sipedge did not start: %v", <-done)
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // a few ticks of every loop
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			http.DefaultClient.CloseIdleConnections()
			goleak.VerifyNone(t, before,
				goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2/server.(*Server).servePeer"),
				goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2/server.readArray"))
		})
	}
}

// A part that fails after the SIP endpoint was bound (here the admin
// address is taken) makes Run return its error with nothing left running
// and the SIP port free again.
func TestRun_FailedStartLeavesNothingRunning(t *testing.T) {
	mr := miniredis.RunT(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	sipAddr := freeSIPAddr(t)
	before := goleak.IgnoreCurrent()
	cfg := config.Default()
	cfg.Name, cfg.Server, cfg.Redis = "fail-1", "fail-1", mr.Addr()
	cfg.Listen, cfg.Admin, cfg.MediaPorts = sipAddr, busy.Addr().String(), ""
	err = Run(context.Background(), cfg, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("Run = %v, want the admin listen error", err)
	}
	goleak.VerifyNone(t, before,
		goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2/server.(*Server).servePeer"),
		goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2/server.readArray"))
	for _, network := range []string{"udp", "tcp"} {
		var c interface{ Close() error }
		if network == "udp" {
			c, err = net.ListenPacket(network, sipAddr)
		} else {
			c, err = net.Listen(network, sipAddr)
		}
		if err != nil {
			t.Fatalf("SIP %s port %s still held after Run failed: %v", network, sipAddr, err)
		}
		c.Close()
	}
}

// freeSIPAddr is a loopback address whose port was free for both UDP and
// TCP a moment ago: the proxy binds both on one port, and a port found
// free for UDP alone may be some other test's TCP port (one run failed
// with "listen tcp …: address already in use" instead of the admin error).
func freeSIPAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		pc.Close()
		if err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no loopback port free for both UDP and TCP in 20 tries")
	return ""
}
