package app

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sipedge/sipedge/internal/config"
)

func TestNodeTLSConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	conf, err := nodeTLSConfig(cfg)
	if err != nil || conf.InsecureSkipVerify || conf.RootCAs != nil {
		t.Errorf("default: %+v %v, want verification against the system roots", conf, err)
	}
	cfg.NodeTLSVerify = "off"
	if conf, _ := nodeTLSConfig(cfg); !conf.InsecureSkipVerify {
		t.Error("node_tls_verify off still verifies")
	}
	for _, bad := range []string{notPEM, filepath.Join(dir, "missing.pem")} {
		cfg.NodeTLSCA = bad
		_, err := nodeTLSConfig(cfg)
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != "node_tls_ca" || fe.Value != bad {
			t.Errorf("node_tls_ca %s: err %v, want a FieldError naming it", bad, err)
		}
	}
}
