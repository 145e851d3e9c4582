package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// newHealthCommand asks one instance's admin HTTP whether it is ready
// (/readyz) or alive (/healthz with --live). It needs no Redis, so it
// serves as the container and systemd health check: exit 0 only on 200.
func newHealthCommand(a *app) *cobra.Command {
	var live bool
	cmd := &cobra.Command{
		Use:   "health [ADMIN_URL]",
		Short: "Check an instance's /readyz (or /healthz with --live); exit 0 only when it answers 200",
		Long: "health asks the admin HTTP of one sipedge instance (default http://127.0.0.1:9060)\n" +
			"and prints its answer. Not ready (503: deserviced, shutting down, Redis down) exits 1.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			base := "http://127.0.0.1:9060"
			if len(args) == 1 {
				base = args[0]
			}
			if !strings.Contains(base, "://") {
				base = "http://" + base
			}
			path := "/readyz"
			if live {
				path = "/healthz"
			}
			return checkHealth(cmd, strings.TrimRight(base, "/")+path, a.timeout)
		},
	}
	cmd.Flags().BoolVar(&live, "live", false, "check /healthz (the process answers) instead of /readyz")
	return cmd
}

func checkHealth(cmd *cobra.Command, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: timeout}
	resp, err := client.Get(url)
	if err != nil {
		return fmt.Errorf("health %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	text := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health %s: %d %s", url, resp.StatusCode, text)
	}
	fmt.Fprintln(cmd.OutOrStdout(), text)
	return nil
}
