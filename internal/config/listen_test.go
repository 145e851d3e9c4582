package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestListen_SeveralAddresses(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		yaml string
		want []string
	}{
		{"one address (as before)", []string{"--listen", "127.0.0.1:5060"}, nil, "", []string{"127.0.0.1:5060"}},
		{"flag list", []string{"--listen", "127.0.0.1:5060,[::1]:5060"}, nil, "", []string{"127.0.0.1:5060", "[::1]:5060"}},
		{"env list with spaces", nil, map[string]string{"SIPEDGE_LISTEN": "0.0.0.0:5060, 127.0.0.2:5070"}, "", []string{"0.0.0.0:5060", "127.0.0.2:5070"}},
		{"yaml text", nil, nil, "listen: 127.0.0.1:5060,[::1]:5062\n", []string{"127.0.0.1:5060", "[::1]:5062"}},
		{"yaml list", nil, nil, "listen:\n  - 127.0.0.1:5060\n  - \"[::1]:5060\"\nsite: s1\n", []string{"127.0.0.1:5060", "[::1]:5060"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.yaml != "" {
				file := filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(file, []byte(tc.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", file)
			}
			cfg, err := Load(args, env(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.ListenAddrs(); !slices.Equal(got, tc.want) {
				t.Errorf("ListenAddrs = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestListen_BadEntryNamed(t *testing.T) {
	cases := []struct {
		name, listen, entry, why string
	}{
		{"second without port", "127.0.0.1:5060,[::1]", "[::1]", "HOST:PORT"},
		{"second a wildcard", "127.0.0.1:5060,0.0.0.0:5062", "0.0.0.0:5062", "IP address"},
		{"second a name", "127.0.0.1:5060,sip.example:5062", "sip.example:5062", "IP address"},
		{"twice", "127.0.0.1:5060,127.0.0.1:5060", "127.0.0.1:5060", "twice"},
		{"empty entry", "127.0.0.1:5060,", "127.0.0.1:5060,", "empty"},
		{"bad port", "127.0.0.1:5060,[::1]:70000", "[::1]:70000", "port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]string{"--listen", tc.listen}, env(nil), io.Discard)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want FieldError", err)
			}
			if fe.Field != "listen" || fe.Value != tc.entry {
				t.Errorf("field %q value %q, want listen %q", fe.Field, fe.Value, tc.entry)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("message %q does not say %q", err, tc.why)
			}
		})
	}
}

func TestListen_YAMLListEntryNotText(t *testing.T) {
	for _, field := range []string{"listen", "ws_listen"} {
		file := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(file, []byte(field+":\n  - {host: 127.0.0.1}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load([]string{"--config", file}, env(nil), io.Discard)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: err = %v, want a FieldError naming %s", field, err, field)
		}
	}
}

func TestNodeTLS_BadValuesNamed(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		field string
	}{
		{[]string{"--node-tls-verify", "maybe"}, "node_tls_verify"},
		{[]string{"--node-tls-ca", "/nonexistent/ca.pem"}, "node_tls_ca"},
	} {
		_, err := Load(tc.args, env(nil), io.Discard)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%v: err %v, want field %s", tc.args, err, tc.field)
		}
	}
}

func TestListen_AdvertisePerEntryAndStreamLists(t *testing.T) {
	yaml := "listen:\n  - 127.0.0.1:5060\n  - \"[::1]:5060 advertise edge6.example:5062\"\n" +
		"tls_listen:\n  - 127.0.0.1:5061\n  - 127.0.0.2:5061 advertise tls2.example\n" +
		"ws_listen: 127.0.0.1:8080, 127.0.0.2:8080\ntls_cert: c.pem\ntls_key: k.pem\n"
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, got, want []ListenEntry) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s = %+v, want %+v", what, got, want)
		}
	}
	check("listen", cfg.ListenEntries(), []ListenEntry{{Addr: "127.0.0.1:5060"}, {Addr: "[::1]:5060", Advertise: "edge6.example:5062"}})
	check("tls_listen", cfg.TLSListens(), []ListenEntry{{Addr: "127.0.0.1:5061"}, {Addr: "127.0.0.2:5061", Advertise: "tls2.example"}})
	check("ws_listen", cfg.WSListens(), []ListenEntry{{Addr: "127.0.0.1:8080"}, {Addr: "127.0.0.2:8080"}})
	check("wss_listen", cfg.WSSListens(), nil)
	if got := cfg.ListenAddrs(); !slices.Equal(got, []string{"127.0.0.1:5060", "[::1]:5060"}) {
		t.Errorf("ListenAddrs = %q", got)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "127.0.0.1:5060 advertise edge.example"}, "edge.example"},
		{[]string{"--listen", "127.0.0.1:5060", "--advertise", "edge.example:5080"}, "edge.example:5080"},
		{[]string{"--listen", "127.0.0.1:5060,127.0.0.2:5060 ADVERTISE two.example"}, ""},
	} {
		cfg, err := Load(tc.args, env(nil), io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if got := cfg.FirstAdvertise(); got != tc.want {
			t.Errorf("%q: FirstAdvertise = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestListen_BadAdvertiseOrStreamEntryNamed(t *testing.T) {
	cases := []struct {
		name        string
		args        []string
		field, want string // the field and the entry the error names
		why         string
	}{
		{"advertise without a value", []string{"--listen", "127.0.0.1:5060,127.0.0.2:5060 advertise"}, "listen", "127.0.0.2:5060 advertise", "Kamailio"},
		{"unknown keyword", []string{"--listen", "127.0.0.1:5060 public edge.example"}, "listen", "127.0.0.1:5060 public edge.example", "advertise HOST"},
		{"bad advertise port", []string{"--listen", "127.0.0.1:5060 advertise edge.example:0x"}, "listen", "127.0.0.1:5060 advertise edge.example:0x", "advertise"},
		{"advertise twice for the first address", []string{"--listen", "127.0.0.1:5060 advertise a.example", "--advertise", "b.example"}, "advertise", "b.example", "own advertise"},
		{"tls_listen second without port", []string{"--tls-listen", "127.0.0.1:5061,127.0.0.2", "--tls-cert", "c", "--tls-key", "k"}, "tls_listen", "127.0.0.2", "HOST:PORT"},
		{"ws_listen empty entry", []string{"--ws-listen", "127.0.0.1:8080,"}, "ws_listen", "127.0.0.1:8080,", "empty"},
		{"the same address on ws and wss", []string{"--ws-listen", "127.0.0.1:8080", "--wss-listen", "127.0.0.1:8080", "--tls-cert", "c", "--tls-key", "k"}, "wss_listen", "127.0.0.1:8080", "twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args, env(nil), io.Discard)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want FieldError", err)
			}
			if fe.Field != tc.field || fe.Value != tc.want {
				t.Errorf("field %q value %q, want %s %q", fe.Field, fe.Value, tc.field, tc.want)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("message %q does not say %q", err, tc.why)
			}
		})
	}
}
