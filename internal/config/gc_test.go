package config

import (
	"io"
	"testing"
)

func TestLoad_GCFields(t *testing.T) {
	cases := []struct {
		name          string
		args          []string
		env           map[string]string
		gogc, limitMB int
	}{
		{"defaults", nil, nil, GCDefault, MemoryLimitDefault},
		{"flags", []string{"--gogc", "200", "--memory-limit-mb", "512"}, nil, 200, 512},
		{"env", nil, map[string]string{"SIPEDGE_GOGC": "400", "SIPEDGE_MEMORY_LIMIT_MB": "1024"}, 400, 1024},
		{"off with a limit", []string{"--gogc", "-1", "--memory-limit-mb", "300"}, nil, -1, 300},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.args, env(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.GOGC != tc.gogc || c.MemoryLimitMB != tc.limitMB {
				t.Errorf("gogc, memory_limit_mb = %d, %d; want %d, %d", c.GOGC, c.MemoryLimitMB, tc.gogc, tc.limitMB)
			}
		})
	}
}
