//go:build linux && (amd64 || arm64)

package sockaddr

import (
	"net/netip"
	"syscall"
	"testing"
)

func TestEncodeDecode_RoundTripsWhatASocketCanReach(t *testing.T) {
	cases := []struct {
		family  int
		dst     string
		want    string // what Decode reads back; "" = declined
		wantLen uintptr
	}{
		{syscall.AF_INET, "127.0.0.1:5060", "127.0.0.1:5060", syscall.SizeofSockaddrInet4},
		{syscall.AF_INET, "[::ffff:127.0.0.2]:5070", "127.0.0.2:5070", syscall.SizeofSockaddrInet4},
		{syscall.AF_INET, "[::1]:5060", "", 0},
		{syscall.AF_INET6, "[::1]:65535", "[::1]:65535", syscall.SizeofSockaddrInet6},
		{syscall.AF_INET6, "127.0.0.1:1", "[::ffff:127.0.0.1]:1", syscall.SizeofSockaddrInet6},
		{syscall.AF_INET6, "[fe80::1%lo]:5060", "", 0},
		{syscall.AF_UNIX, "127.0.0.1:5060", "", 0},
	}
	for _, tc := range cases {
		var sa Raw
		n := Encode(&sa, tc.family, netip.MustParseAddrPort(tc.dst))
		if n != tc.wantLen {
			t.Errorf("Encode(family %d, %s) length = %d, want %d", tc.family, tc.dst, n, tc.wantLen)
			continue
		}
		if n == 0 {
			continue
		}
		if got := Decode(&sa).String(); got != tc.want {
			t.Errorf("Decode(Encode(family %d, %s)) = %s, want %s", tc.family, tc.dst, got, tc.want)
		}
	}
	var unknown Raw
	unknown.Family = syscall.AF_UNIX
	if got := Decode(&unknown); got.IsValid() {
		t.Errorf("Decode of an AF_UNIX address = %v, want the zero AddrPort", got)
	}
}
