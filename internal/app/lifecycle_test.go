package app

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/media"
)

type fakeParts struct {
	mu       sync.Mutex
	shutdown bool
	settings []admission.Settings
	media    []media.Settings
	trusted  [][]netip.Prefix
	beats    int
	dialogs  atomic.Int64
}

func (f *fakeParts) SetShuttingDown(on bool) { f.mu.Lock(); f.shutdown = on; f.mu.Unlock() }
func (f *fakeParts) SetDefaults(s admission.Settings) {
	f.mu.Lock()
	f.settings = append(f.settings, s)
	f.mu.Unlock()
}

type fakeMedia struct{ f *fakeParts }

func (m fakeMedia) SetDefaults(s media.Settings) {
	m.f.mu.Lock()
	m.f.media = append(m.f.media, s)
	m.f.mu.Unlock()
}

// syncBuf is a log sink safe for the lifecycle goroutine and the test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newTestLifecycle(cfg config.Config, f *fakeParts, out *syncBuf) *lifecycle {
	return &lifecycle{cfg: cfg, log: zerolog.New(out), admit: f, state: f, media: fakeMedia{f},
		dialogs: func() int { return int(f.dialogs.Load()) },
		trusted: func(n []netip.Prefix) { f.mu.Lock(); f.trusted = append(f.trusted, n); f.mu.Unlock() },
		beat:    func() { f.mu.Lock(); f.beats++; f.mu.Unlock() }, poll: 10 * time.Millisecond}
}

// runLifecycle starts l on a fresh signal channel; the result arrives on
// the returned channel.
func runLifecycle(l *lifecycle, reload func() (config.Config, error)) (chan os.Signal, <-chan error, context.CancelFunc) {
	sigs := make(chan os.Signal, 4)
	res := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { res <- l.run(ctx, Control{Signals: sigs, Reload: reload}) }()
	return sigs, res, cancel
}

func waitResult(t *testing.T, res <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(within):
		t.Fatalf("lifecycle still running after %v", within)
		return nil
	}
}

func TestLifecycle_Drain(t *testing.T) {
	cases := []struct {
		name      string
		grace     time.Duration
		dialogs   int64
		endAfter  time.Duration // 0: dialogs never end
		second    os.Signal     // sent after the first SIGTERM
		wantLog   string
		wantEarly bool // must end well before the grace
	}{
		{name: "no dialogs: exits at once", grace: time.Hour, wantLog: "shutdown: no dialogs left, exiting", wantEarly: true},
		{name: "exits when the last dialog ends", grace: time.Hour, dialogs: 2, endAfter: 100 * time.Millisecond,
			wantLog: `"reason":"dialogs ended"`, wantEarly: true},
		{name: "exits at the grace period with dialogs up", grace: 150 * time.Millisecond, dialogs: 2,
			wantLog: `"reason":"grace period over","dialogs":2`},
		{name: "second SIGTERM exits at once", grace: time.Hour, dialogs: 1, second: syscall.SIGTERM,
			wantLog: "shutdown: second signal, exiting now", wantEarly: true},
		{name: "SIGINT during the drain exits at once", grace: time.Hour, dialogs: 1, second: os.Interrupt,
			wantLog: "shutdown: second signal, exiting now", wantEarly: true},
		{name: "grace 0 exits at once", grace: 0, dialogs: 3, wantLog: "grace period over"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, out := &fakeParts{}, &syncBuf{}
			f.dialogs.Store(tc.dialogs)
			cfg := config.Default()
			cfg.ShutdownGrace = tc.grace
			sigs, res, cancel := runLifecycle(newTestLifecycle(cfg, f, out), nil)
			defer cancel()
			sigs <- syscall.SIGTERM
			if tc.endAfter > 0 {
				time.AfterFunc(tc.endAfter, func() { f.dialogs.Store(0) })
			}
			if tc.second != nil {
				time.Sleep(50 * time.Millisecond)
				sigs <- tc.second
			}
			if err := waitResult(t, res, 10*time.Second); !errors.Is(err, errStopped) {
				t.Fatalf("run = %v, want errStopped", err)
			}
			log := out.String()
			if !strings.Contains(log, "shutdown: drain started") || !strings.Contains(log, tc.wantLog) {
				t.Errorf("log lacks the drain start or %q:\n%s", tc.wantLog, log)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if !f.shutdown || f.beats == 0 {
				t.Errorf("shutting down %v, beats %d: want the admitter told and the state published", f.shutdown, f.beats)
			}
		})
	}
}

func TestLifecycle_DrainLogsRemainingDialogs(t *testing.T) {
	f, out := &fakeParts{}, &syncBuf{}
	f.dialogs.Store(3)
	cfg := config.Default()
	cfg.ShutdownGrace = 1500 * time.Millisecond
	sigs, res, cancel := runLifecycle(newTestLifecycle(cfg, f, out), nil)
	defer cancel()
	sigs <- syscall.SIGTERM
	time.AfterFunc(300*time.Millisecond, func() { f.dialogs.Store(1) })
	_ = waitResult(t, res, 10*time.Second)
	if !strings.Contains(out.String(), `"dialogs":1,"elapsed"`) {
		t.Errorf("no progress line with the remaining count:\n%s", out.String())
	}
}

func TestLifecycle_HupReloadsAndNeverExits(t *testing.T) {
	defer zerolog.SetGlobalLevel(zerolog.GlobalLevel())
	f, out := &fakeParts{}, &syncBuf{}
	cfg := config.Default()
	next := cfg
	next.LogLevel, next.RetryAfter, next.MediaTimeout = "warn", 5, 9*time.Second
	next.TrustedNetworks = "10.0.0.0/8"
	next.Listen = "127.0.0.1:5999"
	next.RouteKey = "new-secret"
	next.NodeSecret, next.RouteKeyPrev = "new-node-key", "old-route-key"
	reloads := 0
	reload := func() (config.Config, error) {
		reloads++
		if reloads == 2 {
			return config.Config{}, errors.New(`config field "retry_after": "x": not an integer`)
		}
		return next, nil
	}
	l := newTestLifecycle(cfg, f, out)
	sigs, res, cancel := runLifecycle(l, reload)
	sigs <- syscall.SIGHUP
	sigs <- syscall.SIGHUP // a bad file: logged, the running config kept
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-res:
		t.Fatalf("SIGHUP ended the lifecycle: %v", err)
	default:
	}
	cancel()
	if err := waitResult(t, res, 5*time.Second); err != nil {
		t.Fatalf("run after cancel = %v", err)
	}
	log := out.String()
	for _, want := range []string{
		`"field":"log_level","old":"info","new":"warn","message":"reload: setting changed"`,
		`"field":"retry_after","old":"30","new":"5","message":"reload: setting changed"`,
		`"field":"listen","old":"0.0.0.0:5060","new":"127.0.0.1:5999","message":"reload: setting changed but needs a restart`,
		`"field":"route_secret","old":"(secret)","new":"(secret)"`,
		`"level":"error"`, "reload: configuration rejected, the running one is kept",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
	for _, secret := range []string{"new-secret", "new-node-key", "old-route-key"} {
		if strings.Contains(log, secret) {
			t.Errorf("secret %q was logged", secret)
		}
	}
	if zerolog.GlobalLevel() != zerolog.WarnLevel {
		t.Errorf("global level %v, want warn", zerolog.GlobalLevel())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.settings) != 1 || f.settings[0].RetryAfter != 5 {
		t.Errorf("settings defaults applied %+v, want one with retry_after 5", f.settings)
	}
	if len(f.media) != 1 || f.media[0].MediaTimeout != 9*time.Second {
		t.Errorf("media defaults applied %+v, want one with media_timeout 9s", f.media)
	}
	if len(f.trusted) != 1 || len(f.trusted[0]) != 1 || f.trusted[0][0].String() != "10.0.0.0/8" {
		t.Errorf("trusted networks applied %v", f.trusted)
	}
	if l.cfg.Listen != cfg.Listen || l.cfg.RetryAfter != 5 {
		t.Errorf("running config listen %q retry_after %d: want the old listen and the new retry_after", l.cfg.Listen, l.cfg.RetryAfter)
	}
	if f.shutdown {
		t.Error("SIGHUP started a shutdown")
	}
}
