package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of samples by the
// nearest-rank method; 0 for no samples. It sorts samples in place.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 || p <= 0 {
		return 0
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	rank := int(math.Ceil(p / 100 * float64(len(samples))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(samples) {
		rank = len(samples)
	}
	return samples[rank-1]
}

// lossPercent is the share of sent packets that did not come back, in percent.
func lossPercent(sent, received uint64) float64 {
	if sent == 0 {
		return 0
	}
	if received >= sent {
		return 0
	}
	return 100 * float64(sent-received) / float64(sent)
}

// parseStatTicks returns utime+stime (clock ticks) from the text of
// /proc/<pid>/stat. The command name (field 2) may contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatTicks(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command field")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command", len(f))
	}
	u, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat utime: %w", err)
	}
	s, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat stime: %w", err)
	}
	return u + s, nil
}

// parsePssKB returns the Pss line (kB) of /proc/<pid>/smaps_rollup.
func parsePssKB(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "Pss:" {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("smaps_rollup: no Pss line")
}

// parseSkmem sums, over the sockets of `ss -uampH` output owned by one of
// pids, the kernel memory the socket holds: r (receive queue), t
// (transmit), f (forward allocation), w (write queue) and o (options).
// rb and tb are limits, not memory, and are not counted. It also returns
// how many of those sockets it saw.
func parseSkmem(out []byte, pids map[int]bool) (bytesHeld uint64, sockets int) {
	owned := false
	for _, line := range bytes.Split(out, []byte("\n")) {
		s := string(line)
		if i := strings.Index(s, "users:("); i >= 0 {
			owned = false
			for _, part := range strings.Split(s[i:], "pid=")[1:] {
				n := 0
				for n < len(part) && part[n] >= '0' && part[n] <= '9' {
					n++
				}
				if pid, err := strconv.Atoi(part[:n]); err == nil && pids[pid] {
					owned = true
				}
			}
		} else if strings.Contains(s, "UNCONN") || strings.Contains(s, "ESTAB") {
			owned = false // a socket with no users: field
		}
		j := strings.Index(s, "skmem:(")
		if j < 0 || !owned {
			continue
		}
		sockets++
		body := s[j+len("skmem:("):]
		if k := strings.IndexByte(body, ')'); k >= 0 {
			body = body[:k]
		}
		for _, kv := range strings.Split(body, ",") {
			if kv == "" {
				continue
			}
			name := strings.TrimRight(kv, "0123456789")
			v, err := strconv.ParseUint(kv[len(name):], 10, 64)
			if err != nil {
				continue
			}
			switch name {
			case "r", "t", "f", "w", "o":
				bytesHeld += v
			}
		}
		owned = false
	}
	return bytesHeld, sockets
}

// procTicks sums utime+stime over pids.
func procTicks(pids []int) (uint64, error) {
	var sum uint64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return 0, err
		}
		t, err := parseStatTicks(string(b))
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", p, err)
		}
		sum += t
	}
	return sum, nil
}

// procPssKB sums the PSS (kB) over pids.
func procPssKB(pids []int) (uint64, error) {
	var sum uint64
	for _, p := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", p))
		if err != nil {
			return 0, err
		}
		v, err := parsePssKB(f)
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", p, err)
		}
		sum += v
	}
	return sum, nil
}
