package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoad_Precedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sipedge.yaml")
	if err := os.WriteFile(file, []byte("site: file-site\nlisten: 127.0.0.1:5080\nprobe_interval: 3s\nretry_after: 10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file, "--retry-after", "20"},
		env(map[string]string{"SIPEDGE_LISTEN": "127.0.0.1:5090", "SIPEDGE_RETRY_AFTER": "15"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Site != "file-site" {
		t.Errorf("site = %q, want file value", cfg.Site)
	}
	if cfg.Listen != "127.0.0.1:5090" {
		t.Errorf("listen = %q, want env value over file", cfg.Listen)
	}
	if cfg.RetryAfter != 20 {
		t.Errorf("retry_after = %d, want flag value over env", cfg.RetryAfter)
	}
	if cfg.ProbeInterval != 3*time.Second {
		t.Errorf("probe_interval = %s, want 3s from file", cfg.ProbeInterval)
	}
}

func TestLoad_BadValueNamesField(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		field string
	}{
		{"listen without port", []string{"--listen", "127.0.0.1"}, nil, "listen"},
		{"log format", []string{"--log-format", "xml"}, nil, "log_format"},
		{"log level", []string{"--log-level", "loud"}, nil, "log_level"},
		{"probe down zero", []string{"--probe-down", "0"}, nil, "probe_down"},
		{"failover attempts negative", []string{"--failover-attempts", "-1"}, nil, "failover_attempts"},
		{"failover attempts too many", []string{"--failover-attempts", "11"}, nil, "failover_attempts"},
		{"failover timeout past Timer B", []string{"--failover-timeout", "40s"}, nil, "failover_timeout"},
		{"failover timeout zero", []string{"--failover-timeout", "0s"}, nil, "failover_timeout"},
		{"suspect hold zero", []string{"--suspect-hold", "0s"}, nil, "suspect_hold"},
		{"env failover timeout", nil, map[string]string{"SIPEDGE_FAILOVER_TIMEOUT": "soon"}, "failover_timeout"},
		{"retry after text", []string{"--retry-after", "soon"}, nil, "retry_after"},
		{"duration", []string{"--probe-interval", "fast"}, nil, "probe_interval"},
		{"env redis", nil, map[string]string{"SIPEDGE_REDIS": "nohost"}, "redis"},
		{"env int", nil, map[string]string{"SIPEDGE_PROBE_UP": "x"}, "probe_up"},
		{"negative resync", []string{"--resync-interval", "-1s"}, nil, "resync_interval"},
		{"negative counts window", []string{"--counts-window", "-1ms"}, nil, "counts_window"},
		{"counts window over a second", nil, map[string]string{"SIPEDGE_COUNTS_WINDOW": "2s"}, "counts_window"},
		{"negative empty ring grace", []string{"--empty-ring-grace", "-1s"}, nil, "empty_ring_grace"},
		{"empty ring grace text", nil, map[string]string{"SIPEDGE_EMPTY_RING_GRACE": "long"}, "empty_ring_grace"},
		{"media ports odd min", []string{"--media-ports", "30001-30100"}, nil, "media_ports"},
		{"media ports reversed", []string{"--media-ports", "40000-30000"}, nil, "media_ports"},
		{"media ports text", []string{"--media-ports", "lots"}, nil, "media_ports"},
		{"media ip hostname", []string{"--media-ip", "relay.example"}, nil, "media_ip"},
		{"media advertise", []string{"--media-advertise", "300.1.1.1"}, nil, "media_advertise"},
		{"trusted networks", []string{"--trusted-networks", "10.0.0.0/8,bogus"}, nil, "trusted_networks"},
		{"media timeout zero", []string{"--media-timeout", "0s"}, nil, "media_timeout"},
		{"backstop 30s", []string{"--last-participant-timeout", "30s"}, nil, "last_participant_timeout"},
		{"negative shutdown grace", []string{"--shutdown-grace", "-1s"}, nil, "shutdown_grace"},
		{"shutdown grace over a day", []string{"--shutdown-grace", "25h"}, nil, "shutdown_grace"},
		{"guests only negative", nil, map[string]string{"SIPEDGE_GUESTS_ONLY_TIMEOUT": "-1s"}, "guests_only_timeout"},
		{"route secret prev alone", []string{"--route-secret-prev", "old"}, nil, "route_secret_prev"},
		{"node secret prev alone", nil, map[string]string{"SIPEDGE_NODE_SECRET_PREV": "old"}, "node_secret_prev"},
		{"node auth window zero", []string{"--node-auth-window", "0s"}, nil, "node_auth_window"},
		{"node auth window an hour", []string{"--node-auth-window", "1h"}, nil, "node_auth_window"},
		{"source rate negative", []string{"--source-rate", "-1"}, nil, "source_rate"},
		{"drop rate below source rate", []string{"--source-rate", "50", "--source-drop-rate", "10"}, nil, "source_drop_rate"},
		{"source ports text", []string{"--source-ports", "many"}, nil, "source_ports"},
		{"source halfopen negative", nil, map[string]string{"SIPEDGE_SOURCE_HALFOPEN": "-5"}, "source_halfopen"},
		{"max ports percent over 100", []string{"--max-ports-percent", "101"}, nil, "max_ports_percent"},
		{"max heap negative", []string{"--max-memory-mb", "-1"}, nil, "max_memory_mb"},
		{"gogc zero", []string{"--gogc", "0"}, nil, "gogc"},
		{"gogc off without a memory limit", []string{"--gogc", "-1", "--memory-limit-mb", "-1"}, nil, "gogc"},
		{"gogc off, no limit derived", []string{"--gogc", "-1", "--max-memory-mb", "0"}, nil, "gogc"},
		{"gogc over 10000", nil, map[string]string{"SIPEDGE_GOGC": "20000"}, "gogc"},
		{"memory limit below -1", []string{"--memory-limit-mb", "-2"}, nil, "memory_limit_mb"},
		{"memory limit text", nil, map[string]string{"SIPEDGE_MEMORY_LIMIT_MB": "lots"}, "memory_limit_mb"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args, env(tc.env), io.Discard)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want FieldError", err)
			}
			if fe.Field != tc.field {
				t.Errorf("field = %q, want %q", fe.Field, tc.field)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("message %q does not name %q", err, tc.field)
			}
		})
	}
}

func TestLoad_UnknownYAMLKeyRejected(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("lisen: 127.0.0.1:5060\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load([]string{"--config", file}, env(nil), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("err = %v, want it to name the unknown key", err)
	}
}

func TestLoad_ExampleConfigIsValid(t *testing.T) {
	if _, err := Load([]string{"--config", "../../configs/sipedge.yaml"}, env(nil), io.Discard); err != nil {
		t.Fatalf("configs/sipedge.yaml: %v", err)
	}
}

// A bad secret is named by its field, never shown.
func TestLoad_SecretNotInError(t *testing.T) {
	_, err := Load([]string{"--route-secret-prev", "s3cr3t-value"}, env(nil), io.Discard)
	if err == nil || strings.Contains(err.Error(), "s3cr3t-value") {
		t.Fatalf("err = %v, want an error that hides the secret", err)
	}
}
