package redishealth

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

func TestMonitor_WaitUp(t *testing.T) {
	mr := miniredis.RunT(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nobody there: connection refused
	for _, tc := range []struct {
		name    string
		addr    string
		cancel  bool
		wantErr string // "" none
	}{
		{name: "redis answers", addr: mr.Addr()},
		{name: "nobody there: fails after the budget, naming the address", addr: closed,
			wantErr: "redis at " + closed + " unreachable after"},
		{name: "cancelled while waiting", addr: closed, cancel: true, wantErr: context.Canceled.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: tc.addr, MaxRetries: -1})
			defer rdb.Close()
			mon, err := New(rdb, Options{Interval: 5 * time.Millisecond}, zerolog.Nop(), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			budget := 40 * time.Millisecond
			if tc.cancel {
				budget = time.Hour
				time.AfterFunc(30*time.Millisecond, cancel)
			}
			err = mon.WaitUp(ctx, tc.addr, budget)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("WaitUp: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("WaitUp = %v, want an error with %q", err, tc.wantErr)
			case tc.cancel && !errors.Is(err, context.Canceled):
				t.Fatalf("WaitUp = %v, want context.Canceled", err)
			}
			if tc.wantErr == "" && mon.Ready() != nil {
				t.Errorf("Ready after WaitUp = %v, want nil", mon.Ready())
			}
		})
	}
}
