// Command sipedge is the SIP edge proxy and admission gateway daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sipedge/sipedge/internal/app"
	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/internal/logging"
	"github.com/sipedge/sipedge/internal/version"
)

func main() {
	cfg, err := config.Load(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, config.ErrHelp) {
		return
	}
	if errors.Is(err, config.ErrVersion) {
		fmt.Println("sipedge", version.String())
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sipedge: %v\n", err)
		os.Exit(2)
	}
	log, err := logging.StderrReloadable(cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sipedge: %v\n", err)
		os.Exit(2)
	}
	// SIGHUP reloads, SIGTERM and SIGINT drain (internal/app/lifecycle.go).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	reload := func() (config.Config, error) { return config.Load(os.Args[1:], os.Getenv, io.Discard) }
	if err := app.Run(context.Background(), cfg, log, app.Control{Signals: sigs, Reload: reload}); err != nil {
		log.Error().Err(err).Msg("sipedge failed")
		os.Exit(1)
	}
}
