package admin

import (
	"context"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

// Serve returns only once the server is shut down: no goroutine of it
// (its shutdown, its connections) outlives it.
func TestServe_NothingOutlivesIt(t *testing.T) {
	defer goleak.VerifyNone(t)
	srv, err := Listen("127.0.0.1:0", Sources{Gatherer: prometheus.NewRegistry(),
		Ready: func() error { return nil }, Status: func() any { return nil }}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	client := &http.Client{Transport: &http.Transport{}}
	res, err := client.Get("http://" + srv.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/healthz answered %d", res.StatusCode)
	}
	client.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
