package sip

import (
	"net"
	"testing"
)

// sipedge patch: isIPV6's quick reject answers as net.ParseIP does.
func TestIsIPV6_AnswersAsParseIP(t *testing.T) {
	for _, host := range []string{
		"127.0.0.1", "10.1.2.3", "::1", "[::1]", "fe80::1", "2001:db8::5060",
		"::ffff:192.0.2.1", "64:ff9b::192.0.2.1", "1.2.3.4:5060", "localhost",
		"example.com", "a:b", "", ":", ".", "fe80::1%eth0",
	} {
		ip := net.ParseIP(host)
		if got, want := isIPV6(host), ip != nil && ip.To4() == nil; got != want {
			t.Errorf("isIPV6(%q) = %v, want %v", host, got, want)
		}
	}
}

func BenchmarkIsIPV6(b *testing.B) {
	for _, host := range []string{"127.0.0.1", "2001:db8::5060"} {
		b.Run(host, func(b *testing.B) {
			for range b.N {
				isIPV6(host)
			}
		})
	}
}
