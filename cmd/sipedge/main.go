// Command sipedge is the SIP edge proxy and admission gateway daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sipedge/sipedge/internal/app"
	"github.com/sipedge/sipedge/internal/config"
	"github.com/sipedge/sipedge/internal/logging"
)

func main() {
	cfg, err := config.Load(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sipedge: %v\n", err)
		os.Exit(2)
	}
	log, err := logging.Stderr(cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sipedge: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, log); err != nil {
		log.Error().Err(err).Msg("sipedge failed")
		os.Exit(1)
	}
}
