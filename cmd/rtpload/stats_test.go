package main

import (
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 99, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..10", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 50, 5 * time.Millisecond},
		{"p99 of 1..100", ms(seq(100)...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(3, 1, 2), 100, 3 * time.Millisecond},
		{"p99 of 1..10 is the max", ms(seq(10)...), 99, 10 * time.Millisecond},
		{"p0 is nothing", ms(1, 2), 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.in, tc.p); got != tc.want {
				t.Fatalf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestLossPercent(t *testing.T) {
	tests := []struct {
		sent, recv uint64
		want       float64
	}{{0, 0, 0}, {100, 100, 0}, {100, 99, 1}, {200, 150, 25}, {10, 12, 0}}
	for _, tc := range tests {
		if got := lossPercent(tc.sent, tc.recv); got != tc.want {
			t.Errorf("lossPercent(%d, %d) = %v, want %v", tc.sent, tc.recv, got, tc.want)
		}
	}
}

func TestParseStatTicks(t *testing.T) {
	tests := []struct {
		name, in string
		want     uint64
		err      bool
	}{
		{"plain", "42 (sipedge) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 0 0", 325, false},
		{"name with spaces and parens", "7 (a b) c) R 1 7 7 0 -1 0 0 0 0 0 10 5 0 0 20 0 1 0 1 0 0", 15, false},
		{"no command", "garbage", 0, true},
		{"short", "1 (x) S 1 2", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 zz 5 0 0", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatTicks(tc.in)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("parseStatTicks = %d, %v; want %d, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParsePssKB(t *testing.T) {
	in := "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:   2000 kB\nPss:   1234 kB\nPss_Anon: 1000 kB\n"
	if got, err := parsePssKB(strings.NewReader(in)); err != nil || got != 1234 {
		t.Fatalf("parsePssKB = %d, %v; want 1234", got, err)
	}
	if _, err := parsePssKB(strings.NewReader("Rss: 1 kB\n")); err == nil {
		t.Fatal("no Pss line: want an error")
	}
}

func TestParseSkmem(t *testing.T) {
	out := `UNCONN 0      0      127.0.0.1:38118 0.0.0.0:* users:(("sipedge",pid=30190,fd=20))
	 skmem:(r768,rb212992,t0,tb212992,f4096,w0,o0,bl0,d0)
UNCONN 0      0      127.0.0.1:38119 0.0.0.0:* users:(("other",pid=5,fd=21))
	 skmem:(r100000,rb212992,t0,tb212992,f0,w0,o0,bl0,d0)
UNCONN 0      0      127.0.0.1:40000 0.0.0.0:* users:(("rtpengine",pid=77,fd=3),("rtpengine",pid=78,fd=3))
	 skmem:(r0,rb212992,t256,tb212992,f0,w512,o8,bl0,d3)
UNCONN 0      0      127.0.0.1:40001 0.0.0.0:*
	 skmem:(r9999,rb212992,t0,tb212992,f0,w0,o0,bl0,d0)
`
	tests := []struct {
		name    string
		pids    map[int]bool
		bytes   uint64
		sockets int
	}{
		{"sipedge", map[int]bool{30190: true}, 768 + 4096, 1},
		{"second pid of a shared socket", map[int]bool{78: true}, 256 + 512 + 8, 1},
		{"both", map[int]bool{30190: true, 77: true}, 768 + 4096 + 256 + 512 + 8, 2},
		{"none", map[int]bool{1: true}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, n := parseSkmem([]byte(out), tc.pids)
			if b != tc.bytes || n != tc.sockets {
				t.Fatalf("parseSkmem = %d bytes, %d sockets; want %d, %d", b, n, tc.bytes, tc.sockets)
			}
		})
	}
}

func TestSdpMedia(t *testing.T) {
	tests := []struct {
		name, body, want string
		err              bool
	}{
		{"session c=", "v=0\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n", "127.0.0.1:40000", false},
		{"media c= wins", "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 127.0.0.2\r\n", "127.0.0.2:4000", false},
		{"first audio only", "c=IN IP4 127.0.0.1\nm=audio 5000 RTP/AVP 0\nm=audio 6000 RTP/AVP 0\nc=IN IP4 127.0.0.9\n", "127.0.0.1:5000", false},
		{"video skipped", "c=IN IP4 127.0.0.1\nm=video 7000 RTP/AVP 96\nm=audio 7002 RTP/AVP 0\n", "127.0.0.1:7002", false},
		{"no audio", "c=IN IP4 127.0.0.1\nm=video 7000 RTP/AVP 96\n", "", true},
		{"no address", "m=audio 7000 RTP/AVP 0\n", "", true},
		{"hostname", "c=IN IP4 example.com\nm=audio 7000 RTP/AVP 0\n", "", true},
		{"bad port", "c=IN IP4 127.0.0.1\nm=audio 70000 RTP/AVP 0\n", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sdpMedia([]byte(tc.body))
			if (err != nil) != tc.err {
				t.Fatalf("sdpMedia error = %v, want error %v", err, tc.err)
			}
			if err == nil && got.String() != tc.want {
				t.Fatalf("sdpMedia = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestParseInts(t *testing.T) {
	tests := []struct {
		in   string
		want []int
		err  bool
	}{
		{"1000 2000", []int{1000, 2000}, false},
		{"  7 ", []int{7}, false},
		{"", nil, false},
		{"10 x", nil, true},
		{"0", nil, true},
		{"-5", nil, true},
	}
	for _, tc := range tests {
		got, err := parseInts(tc.in, "rates")
		if (err != nil) != tc.err || len(got) != len(tc.want) {
			t.Fatalf("parseInts(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("parseInts(%q) = %v, want %v", tc.in, got, tc.want)
			}
		}
	}
}
