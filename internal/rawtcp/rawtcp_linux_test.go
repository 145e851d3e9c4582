//go:build linux && (amd64 || arm64)

package rawtcp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// pair is a raw client Conn and the server side of the same connection.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := Dialer(time.Second)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); srv.Close() })
	rc, ok := c.(*Conn)
	if !ok {
		t.Fatalf("Dialer gave %T, want *Conn", c)
	}
	return rc, srv
}

func TestConn_WriteAndReadBothWays(t *testing.T) {
	c, srv := pair(t)
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(srv, got); err != nil || string(got) != "PING\r\n" {
		t.Fatalf("server read %q, %v", got, err)
	}
	if _, err := srv.Write([]byte("+PONG\r\n")); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, 7)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "+PONG\r\n" {
		t.Fatalf("client read %q, %v", got, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read = %d, %v", n, err)
	}
}

// A write larger than both socket buffers fills them, waits for the
// reader (EAGAIN, then the netpoller), and still sends every byte in order.
func TestConn_LargeWriteWaitsForRoomAndSendsAll(t *testing.T) {
	c, srv := pair(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	done := make(chan error, 1)
	go func() {
		n, err := c.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the buffers fill first
	got, err := io.ReadAll(io.LimitReader(srv, int64(len(want))))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("server got %d bytes, not the %d written in order", len(got), len(want))
	}
}

func TestConn_ReadDeadlineIsATimeout(t *testing.T) {
	c, _ := pair(t)
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := c.Read(make([]byte, 16))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline = %v, want a net.Error timeout", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("read waited %v past a 30 ms deadline", waited)
	}
}

func TestConn_PeerClosed(t *testing.T) {
	c, srv := pair(t)
	srv.Close()
	// The FIN reaches the client's socket at once on loopback; allow a little.
	var err error
	for range 50 {
		if _, err = c.Write([]byte("GET k\r\n")); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(err, io.EOF) {
		t.Fatalf("write after the peer closed = %v, want io.EOF (so go-redis retries on a new connection)", err)
	}
	if _, err := c.Read(make([]byte, 16)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer closed = %v, want io.EOF", err)
	}
}

func TestConn_CloseEndsABlockedRead(t *testing.T) {
	c, _ := pair(t)
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 16)); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read ended by Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end the blocked read")
	}
}

// Through go-redis: commands work, and after the server dropped every
// connection the next command succeeds on a new one, not with an error.
func TestDialer_GoRedisSurvivesAServerRestart(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), Dialer: Dialer(time.Second), MaxRetries: 1})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	mr.Close()
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	mr.Set("k", "v2")
	time.Sleep(20 * time.Millisecond) // the FIN of the old connection arrives
	got, err := rdb.Get(ctx, "k").Result()
	if err != nil || got != "v2" {
		t.Fatalf("GET after the restart = %q, %v", got, err)
	}
	// A pub/sub connection reads and writes through the same Conn.
	sub := rdb.Subscribe(ctx, "ch")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Publish(ctx, "ch", "hello").Err(); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil || msg.Payload != "hello" {
		t.Fatalf("pub/sub message = %v, %v", msg, err)
	}
}
