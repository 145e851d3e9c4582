package redishealth

import (
	"context"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
)

func TestLatency_TimesCommandsAndPipelinesByResult(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	reg := prometheus.NewRegistry()
	l, err := NewLatency(reg)
	if err != nil {
		t.Fatal(err)
	}
	rdb.AddHook(l)
	ctx := context.Background()
	_ = rdb.Set(ctx, "k", "v", 0).Err()
	_ = rdb.Get(ctx, "k").Err()
	_ = rdb.Get(ctx, "missing").Err()
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, "k"); p.Get(ctx, "k"); return nil })
	mr.Close()
	_ = rdb.Get(ctx, "k").Err() // Redis gone
	for _, tc := range []struct {
		cmd, result string
		want        int
	}{
		{"set", "ok", 1}, {"get", "ok", 1}, {"get", "nil", 1}, {"pipeline", "ok", 1}, {"get", "error", 1},
	} {
		var m dto.Metric
		if err := l.hist.WithLabelValues(tc.cmd, tc.result).(prometheus.Metric).Write(&m); err != nil {
			t.Fatal(err)
		}
		if n := m.GetHistogram().GetSampleCount(); n != uint64(tc.want) {
			t.Errorf("%s %s: %d observations, want %d", tc.cmd, tc.result, n, tc.want)
		}
	}
}
