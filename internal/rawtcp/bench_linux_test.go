//go:build linux && (amd64 || arm64)

package rawtcp

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// BenchmarkGet is one go-redis GET round trip to an in-process Redis over
// loopback, through Conn (raw) and through net's own connection.
func BenchmarkGet(b *testing.B) {
	mr := miniredis.RunT(b)
	mr.Set("k", "v")
	for _, tc := range []struct {
		name string
		dial func(ctx context.Context, network, addr string) (net.Conn, error)
	}{
		{"raw", Dialer(time.Second)},
		{"net", (&net.Dialer{Timeout: time.Second}).DialContext},
	} {
		b.Run(tc.name, func(b *testing.B) {
			rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), Dialer: tc.dial, PoolSize: 1})
			defer rdb.Close()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := rdb.Get(ctx, "k").Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
