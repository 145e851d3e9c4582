package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func TestEndpoints(t *testing.T) {
	ready := errors.New("deserviced by profile p1")
	srv, err := Listen("127.0.0.1:0", Sources{
		Gatherer: prometheus.NewRegistry(),
		Ready:    func() error { return ready },
		Status:   func() any { return map[string]string{"hello": "world"} },
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	cases := []struct {
		path        string
		code        int
		contentType string
		contains    string
	}{
		{"/", 200, "text/html", "api/status"},
		{"/healthz", 200, "text/plain", "ok"},
		{"/readyz", 503, "text/plain", "deserviced by profile p1"},
		{"/api/status", 200, "application/json", `"hello": "world"`},
		{"/metrics", 200, "text/plain", ""},
		{"/nothing-here", 404, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			res, err := http.Get("http://" + srv.Addr() + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.code {
				t.Errorf("HTTP %d, want %d", res.StatusCode, tc.code)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
				t.Errorf("Content-Type %q, want %s", ct, tc.contentType)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body lacks %q:\n%.300s", tc.contains, body)
			}
		})
	}
}

// The profiler is served only when asked for (admin_pprof on).
func TestPprof_OnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		srv, err := Listen("127.0.0.1:0", Sources{Gatherer: prometheus.NewRegistry(),
			Ready: func() error { return nil }, Status: func() any { return nil }, Pprof: on}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		res, err := http.Get("http://" + srv.Addr() + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		<-done
		if served := res.StatusCode == 200 && strings.Contains(string(body), "goroutine profile"); served != on {
			t.Errorf("pprof %v: HTTP %d, profile served %v", on, res.StatusCode, served)
		}
	}
}
