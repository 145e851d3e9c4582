package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// saddCalls is how many SADD commands redis-server ran (scripts' included)
// since the last CONFIG RESETSTAT.
func (e *env) saddCalls() int {
	e.t.Helper()
	info, err := e.rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		e.t.Fatalf("INFO commandstats: %v", err)
	}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_sadd:calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		v, err := strconv.Atoi(n)
		if err != nil {
			e.t.Fatalf("commandstats line %q: %v", line, err)
		}
		return v
	}
	return 0
}

// TestFlat_InstancesSetOneWriterPerBeat: an idle instance writes itself
// into sipedge:instances once a beat (the dialog-count ledger's script),
// not twice (that and the instance publisher, both every second); it stays
// a member, and comes back at the next beat when removed.
func TestFlat_InstancesSetOneWriterPerBeat(t *testing.T) {
	e := newEnv(t)
	e.startSipedge("A")
	ctx := context.Background()
	eventually(t, 5*time.Second, "instance A in sipedge:instances with a heartbeat", func() string {
		if ok, _ := e.rdb.SIsMember(ctx, "sipedge:instances", "A").Result(); !ok {
			return "not a member"
		}
		if e.instanceField("A", "heartbeat") == "" {
			return "no heartbeat"
		}
		return ""
	})
	time.Sleep(1500 * time.Millisecond) // start-up writes done
	if err := e.rdb.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatalf("CONFIG RESETSTAT: %v", err)
	}
	start := time.Now()
	hb0 := e.instanceField("A", "heartbeat")
	time.Sleep(5 * time.Second)
	calls, el := e.saddCalls(), time.Since(start).Seconds()
	if perBeat := float64(calls) / el; perBeat > 1.3 || perBeat < 0.6 {
		t.Errorf("SADD a second while idle = %.2f (%d in %.1f s), want about 1: one writer of sipedge:instances per beat",
			perBeat, calls, el)
	}
	if e.instanceField("A", "heartbeat") == hb0 {
		t.Error("heartbeat not rewritten in 5 s")
	}
	if err := e.rdb.SRem(ctx, "sipedge:instances", "A").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "instance A back in sipedge:instances", func() string {
		if ok, _ := e.rdb.SIsMember(ctx, "sipedge:instances", "A").Result(); !ok {
			return "not a member"
		}
		return ""
	})
}
