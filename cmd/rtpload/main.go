// Command rtpload is the RTP load generator of scripts/bench-compare.sh:
// the same load for every relay (sipedge with anchoring on, rtpengine behind
// Kamailio), over real calls set up through SIP.
//
//	rtpload node --listen 127.0.0.1:PORT
//	    the far end: answers INVITEs (one echo socket per call) and sends
//	    every RTP packet back where it came from; answers OPTIONS/REGISTER.
//	rtpload call --proxy 127.0.0.1:PORT --local 127.0.0.1:PORT --calls N \
//	    --rates "2000 5000" --seconds 5 --pids PID,PID
//	    sets up N calls through the proxy, then for each rate sends that many
//	    RTP packets/s (160-byte PCMU payloads carrying the send time) round
//	    robin over the calls and prints one "step" line: packets sent and
//	    echoed, loss, p50/p99 round trip (caller -> relay -> node -> relay ->
//	    caller), relay CPU per relayed packet and memory per call; BYE at the end.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// quietLog is sipgo's logger: warnings and errors only (a retransmitted
// 200 the transaction layer has already finished with is not news).
var quietLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func main() {
	slog.SetDefault(quietLog) // parts of sipgo log through the default logger
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "rtpload:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) == 0 {
		return fmt.Errorf("usage: rtpload node|call [flags]")
	}
	switch args[0] {
	case "node":
		fs := flag.NewFlagSet("node", flag.ContinueOnError)
		listen := fs.String("listen", "127.0.0.1:5070", "SIP address of the echo node (UDP)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return runNode(ctx, *listen)
	case "call":
		fs := flag.NewFlagSet("call", flag.ContinueOnError)
		cfg := callConfig{}
		fs.StringVar(&cfg.Proxy, "proxy", "", "proxy under test, IP:PORT (required)")
		fs.StringVar(&cfg.Local, "local", "127.0.0.1:5080", "caller's SIP address, IP:PORT")
		fs.IntVar(&cfg.Calls, "calls", 100, "concurrent calls (1..5000)")
		rates := fs.String("rates", "2000 5000 10000", "RTP packets/s sent over all calls, one step each")
		secs := fs.Float64("seconds", 5, "seconds per step")
		pids := fs.String("pids", "", "comma-separated pids of the relay processes (required)")
		fs.DurationVar(&cfg.MaxP99, "max-p99", 3*time.Millisecond, "a step passes with p99 round trip at most this")
		fs.Float64Var(&cfg.MaxLoss, "max-loss", 1, "and loss below this, in percent")
		fs.DurationVar(&cfg.SetupWait, "setup-timeout", 30*time.Second, "bound on setting up every call")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		var err error
		if cfg.Rates, err = parseInts(*rates, "rates"); err != nil {
			return err
		}
		if cfg.Pids, err = parseInts(strings.ReplaceAll(*pids, ",", " "), "pids"); err != nil {
			return err
		}
		switch {
		case cfg.Proxy == "":
			return fmt.Errorf("call: --proxy is required")
		case len(cfg.Pids) == 0:
			return fmt.Errorf("call: --pids is required")
		case cfg.Calls < 1 || cfg.Calls > 5000:
			return fmt.Errorf("call: --calls %d out of 1..5000", cfg.Calls)
		case *secs <= 0 || *secs > 600:
			return fmt.Errorf("call: --seconds %v out of (0, 600]", *secs)
		}
		cfg.Step = time.Duration(*secs * float64(time.Second))
		return runCall(ctx, cfg)
	}
	return fmt.Errorf("unknown command %q: node or call", args[0])
}

// parseInts reads space-separated positive integers.
func parseInts(s, field string) ([]int, error) {
	var out []int
	for _, f := range strings.Fields(s) {
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("--%s: %q is not a positive integer", field, f)
		}
		out = append(out, v)
	}
	return out, nil
}
