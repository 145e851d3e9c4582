package admission

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
)

// BenchmarkBeat times one instance's beat against a real redis-server
// (SIPEDGE_BENCH_REDIS=host:port; its data is flushed), holding 2 dialogs
// of each of n conferences: light (nothing changed since the last write)
// and full. redis_us/beat is the scripts' time inside redis-server (INFO
// commandstats): what every other client waits for.
//
//	redis-server --port 6390 --save "" --appendonly no &
//	SIPEDGE_BENCH_REDIS=127.0.0.1:6390 go test -run '^$' -bench Beat -benchtime 20x ./admission/
func BenchmarkBeat(b *testing.B) {
	addr := os.Getenv("SIPEDGE_BENCH_REDIS")
	if addr == "" {
		b.Skip("SIPEDGE_BENCH_REDIS (host:port of a redis-server whose data may be flushed) not set")
	}
	for _, n := range []int{1000, 10000} {
		for _, full := range []bool{false, true} {
			b.Run(fmt.Sprintf("confs=%d/full=%v", n, full), func(b *testing.B) { benchBeat(b, addr, n, full) })
		}
	}
}

func benchBeat(b *testing.B, addr string, n int, full bool) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	h := newHolder()
	for i := range n {
		conf := fmt.Sprintf("conf%d", i)
		h.add(conf+"a", conf, fmt.Sprintf("n%d", i%3))
		h.add(conf+"b", conf, fmt.Sprintf("n%d", i%3))
	}
	now := time.Unix(1_700_000_000, 0)
	l, err := NewLedger(rdb, keys.New(""), LedgerOptions{Self: "A", Interval: time.Second, ReconcileEvery: time.Hour,
		RedisTimeout: 5 * time.Second, Now: func() time.Time { return now }}, h, zerolog.Nop(), nil)
	if err != nil {
		b.Fatal(err)
	}
	l.lastRecon = now
	l.Beat(ctx) // the first, full: the conferences exist
	every := l.opts.FullEvery
	if full {
		l.opts.FullEvery = time.Nanosecond
	}
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		now = now.Add(time.Second)
		if !full && now.Sub(l.beat.lastFull) >= every {
			l.beat.lastFull = now // keep every beat light
		}
		l.Beat(ctx)
	}
	b.StopTimer()
	calls, usec := scriptStats(ctx, b, rdb)
	if calls < int64(b.N) {
		b.Fatalf("%d script runs for %d beats", calls, b.N)
	}
	b.ReportMetric(float64(usec)/float64(b.N), "redis_us/beat")
}

// scriptStats reads EVALSHA's calls and microseconds from INFO commandstats.
func scriptStats(ctx context.Context, b *testing.B, rdb *redis.Client) (calls, usec int64) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(info) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_evalsha:"); ok {
			if _, err := fmt.Sscanf(rest, "calls=%d,usec=%d,", &calls, &usec); err != nil {
				b.Fatalf("commandstats %q: %v", line, err)
			}
		}
	}
	return calls, usec
}
