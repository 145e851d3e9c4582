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
		limit         int // MemoryLimit()
	}{
		{"defaults", nil, nil, GCDefault, MemoryLimitDefault, 1536},
		{"flags", []string{"--gogc", "200", "--memory-limit-mb", "512"}, nil, 200, 512, 512},
		{"env", nil, map[string]string{"SIPEDGE_GOGC": "400", "SIPEDGE_MEMORY_LIMIT_MB": "1024"}, 400, 1024, 1024},
		{"off with a limit", []string{"--gogc", "-1", "--memory-limit-mb", "300"}, nil, -1, 300, 300},
		{"off with the derived limit", []string{"--gogc", "-1", "--max-memory-mb", "1000"}, nil, -1, 0, 750},
		{"no limit", []string{"--memory-limit-mb", "-1"}, nil, GCDefault, -1, 0},
		{"no limit without max_memory_mb", []string{"--max-memory-mb", "0"}, nil, GCDefault, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.args, env(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.GOGC != tc.gogc || c.MemoryLimitMB != tc.limitMB || c.MemoryLimit() != tc.limit {
				t.Errorf("gogc, memory_limit_mb, MemoryLimit() = %d, %d, %d; want %d, %d, %d",
					c.GOGC, c.MemoryLimitMB, c.MemoryLimit(), tc.gogc, tc.limitMB, tc.limit)
			}
		})
	}
}
