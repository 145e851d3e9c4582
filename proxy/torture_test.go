package proxy

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/sipedge/sipedge/internal/keys"
	"github.com/sipedge/sipedge/media"
	"github.com/sipedge/sipedge/media/relay"
	"github.com/sipedge/sipedge/ring"
)

// loopbackOnly reports whether this process sees no network but loopback,
// i.e. runs in a namespace made by `unshare --net`.
func loopbackOnly() bool {
	ifs, err := net.Interfaces()
	if err != nil {
		return false
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			return false
		}
	}
	return true
}

// TestTorture feeds the RFC 4475 invalid messages to a running proxy over
// UDP and TCP. None may crash it; unusable ones must be counted; the proxy
// must still answer afterwards. The messages name foreign hosts, so the test
// refuses to run where a packet could leave the machine.
func TestTorture(t *testing.T) {
	if !loopbackOnly() {
		t.Skip("needs a loopback-only network namespace: run `make test` (unshare --net)")
	}
	files, err := filepath.Glob("testdata/rfc4475/*.dat")
	if err != nil || len(files) == 0 {
		t.Fatalf("no torture messages: %v", err)
	}
	node := newPeer(t)
	reg := prometheus.NewRegistry()
	// The real media manager: hostile SDP bodies go through sdpx and the
	// relay pool too.
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	pool, err := relay.NewPool(netip.MustParseAddr("127.0.0.1"), 46000, 46999)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := media.New(media.Options{Pool: pool, Redis: rdb, Keys: keys.New(""), Instance: "torture",
		Defaults: media.Settings{MediaTimeout: time.Minute}, Log: zerolog.Nop(), Reg: reg})
	if err != nil {
		t.Fatal(err)
	}
	px, err := New(Options{Listen: "127.0.0.1:0", RouteSecret: "k", Media: mgr},
		&fakeAdmitter{node: ring.Node{Name: "n1", Addr: node.addr()}}, zerolog.Nop(), reg) // transactions outlive the test: no t.Log
	if err != nil {
		t.Fatal(err)
	}
	mgr.SetEnder(px)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = mgr.Run(ctx) }()
	serve(t, px)
	sender := newPeer(t)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sender.send(px.Addr(), string(raw))
		if c, err := net.DialTimeout("tcp", px.Addr(), time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
			_, _ = c.Write(raw)
			buf := make([]byte, 4096)
			_, _ = c.Read(buf)
			c.Close()
		}
	}
	// Still alive and answering.
	sender.send(px.Addr(), strings.ReplaceAll(`OPTIONS sip:`+px.Addr()+` SIP/2.0
Via: SIP/2.0/UDP `+sender.addr()+`;branch=z9hG4bK-alive
Max-Forwards: 70
From: <sip:mon@127.0.0.1>;tag=a1
To: <sip:`+px.Addr()+`>
Call-ID: alive-1
CSeq: 1 OPTIONS
Content-Length: 0

`, "\n", "\r\n"))
	sender.recv("SIP/2.0 200")
	bad := testutil.ToFloat64(px.metrics.sipgoErrors)
	var answered400 float64
	for _, reason := range []string{"missing Via", "missing From", "missing To", "missing Call-ID", "missing CSeq",
		"CSeq method mismatch", "missing From tag", "bad Request-URI"} {
		answered400 += testutil.ToFloat64(px.metrics.malformed.WithLabelValues(reason))
	}
	sdp := testutil.ToFloat64(px.metrics.sdpRejected.WithLabelValues("488"))
	t.Logf("%d torture messages x2 transports: %v dropped unparsable, %v answered 400, %v refused 488 (SDP), %d relay ports in use",
		len(files), bad, answered400, sdp, pool.InUse())
	if bad+answered400 == 0 {
		t.Fatal("no torture message was counted as malformed")
	}
}
