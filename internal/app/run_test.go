package app

import (
	"context"
	"net/http"
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
