package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
)

func TestHealth_ExitsNonZeroUnlessReady(t *testing.T) {
	mr := miniredis.RunT(t)
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz":
			_, _ = w.Write([]byte("ok\n"))
		case r.URL.Path == "/readyz" && ready:
			_, _ = w.Write([]byte("ready\n"))
		case r.URL.Path == "/readyz":
			http.Error(w, "deserviced by profile p1", http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	cases := []struct {
		name    string
		ready   bool
		args    []string
		wantOut string
		wantErr string
	}{
		{"ready", true, []string{"health", srv.URL}, "ready", ""},
		{"scheme added", true, []string{"health", host}, "ready", ""},
		{"not ready", false, []string{"health", srv.URL}, "", "503 deserviced by profile p1"},
		{"live while not ready", false, []string{"health", "--live", srv.URL}, "ok", ""},
		{"nobody listening", true, []string{"health", "http://127.0.0.1:1"}, "", "connection refused"},
		{"two addresses", true, []string{"health", srv.URL, srv.URL}, "", "accepts at most 1 arg"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ready = tc.ready
			out, _, err := ctl(t, mr, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || strings.TrimSpace(out) != tc.wantOut {
				t.Fatalf("out %q err %v, want %q", out, err, tc.wantOut)
			}
		})
	}
}

// Issue 10 item 7: a mistyped subcommand is an error, not a help page and
// exit 0; a group alone still shows its help.
func TestUsage_UnknownSubcommandFails(t *testing.T) {
	mr := miniredis.RunT(t)
	_, _, err := ctl(t, mr, "nodes", "lst")
	if err == nil || !strings.Contains(err.Error(), `unknown command "lst" for "sipedgectl nodes"`) || !strings.Contains(err.Error(), "did you mean list?") {
		t.Fatalf("nodes lst: err = %v", err)
	}
	out, _, err := ctl(t, mr, "nodes")
	if err != nil || !strings.Contains(out, "Usage:") {
		t.Fatalf("nodes alone: out %q err %v, want its help", out, err)
	}
}

func TestPositionals(t *testing.T) {
	for use, want := range map[string]string{
		"show ID": "ID", "add NAME ADDR": "NAME ADDR", "maintenance on|off NODE": "on|off NODE",
		"drain [--wait] [--timeout D] NODE|INSTANCE":               "NODE|INSTANCE",
		"create ID --name NAME --servers a,b [--description TEXT]": "ID",
		"health [ADMIN_URL]": "", "rollout [NODE...]": "", "list": "",
	} {
		if got := strings.Join(positionals(use), " "); got != want {
			t.Errorf("positionals(%q) = %q, want %q", use, got, want)
		}
	}
	mr := miniredis.RunT(t)
	if _, _, err := ctl(t, mr, "nodes", "add", "n1"); err == nil || !strings.Contains(err.Error(), "missing ADDR") {
		t.Errorf("nodes add n1: err = %v, want missing ADDR", err)
	}
}
