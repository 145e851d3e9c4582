package relay

import "testing"

func TestSeqTracker_CountsForwardGaps(t *testing.T) {
	type pkt struct {
		ssrc uint32
		seq  uint16
	}
	tests := []struct {
		name     string
		pkts     []pkt
		wantLost uint64
	}{
		{"in order", []pkt{{1, 10}, {1, 11}, {1, 12}}, 0},
		{"one gap", []pkt{{1, 10}, {1, 13}}, 2},
		{"wraparound without loss", []pkt{{1, 65534}, {1, 65535}, {1, 0}, {1, 1}}, 0},
		{"gap across wraparound", []pkt{{1, 65534}, {1, 1}}, 2},
		{"duplicate", []pkt{{1, 10}, {1, 10}, {1, 11}}, 0},
		{"late packet neither counts nor rewinds", []pkt{{1, 10}, {1, 12}, {1, 11}, {1, 13}}, 1},
		{"new ssrc restarts", []pkt{{1, 10}, {1, 12}, {2, 5000}, {2, 5002}}, 2},
		{"ssrc back restarts too", []pkt{{1, 10}, {2, 500}, {1, 20}, {1, 21}}, 0},
		{"largest counted gap", []pkt{{1, 0}, {1, maxDropout - 1}}, maxDropout - 2},
		{"restart jump needs confirming", []pkt{{1, 10}, {1, 40000}, {1, 11}, {1, 12}}, 0},
		{"confirmed restart resyncs", []pkt{{1, 10}, {1, 40000}, {1, 40001}, {1, 40003}}, 1},
		{"backward restart", []pkt{{1, 30000}, {1, 5}, {1, 6}, {1, 8}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr seqTracker
			var lost uint64
			for _, p := range tt.pkts {
				lost += tr.update(p.ssrc, p.seq)
			}
			if lost != tt.wantLost {
				t.Fatalf("lost = %d, want %d", lost, tt.wantLost)
			}
		})
	}
}

func TestIsMuxedRTCP(t *testing.T) {
	tests := []struct {
		b1   byte
		want bool
	}{
		{0, false}, {111, false}, {0x80 | 111, false}, {63, false},
		{64, true}, {72, true}, {200, true}, {201, true}, {0x80 | 95, true}, {96, false},
	}
	for _, tt := range tests {
		if got := isMuxedRTCP([]byte{0x80, tt.b1}); got != tt.want {
			t.Errorf("isMuxedRTCP(second byte %d) = %v, want %v", tt.b1, got, tt.want)
		}
	}
}
