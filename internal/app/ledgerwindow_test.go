package app

import (
	"io"
	"testing"
	"time"

	"github.com/sipedge/sipedge/admission"
	"github.com/sipedge/sipedge/internal/config"
)

func TestLedgerWindow_FromCountsWindow(t *testing.T) {
	cases := []struct {
		name   string
		window time.Duration
		want   time.Duration
	}{
		{"zero writes each change at once", 0, -1},
		{"a window is kept", 50 * time.Millisecond, 50 * time.Millisecond},
		{"the longest allowed", time.Second, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ledgerWindow(tc.window); got != tc.want {
				t.Errorf("ledgerWindow(%s) = %s, want %s", tc.window, got, tc.want)
			}
		})
	}
}

// The documented default of counts_window is the Ledger's own default, so
// a Ledger built without the setting behaves as the daemon does.
func TestLedgerWindow_ConfigDefaultIsTheLedgersDefault(t *testing.T) {
	cfg, err := config.Load(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CountsWindow != admission.DefaultCoalesce {
		t.Errorf("counts_window default = %s, admission.DefaultCoalesce = %s", cfg.CountsWindow, admission.DefaultCoalesce)
	}
}
