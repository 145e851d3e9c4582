package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

var errNotIP = errors.New("must be an IP address")

// PortRange parses media_ports ("MIN-MAX"); ok is false when it is empty
// (media anchoring off).
func PortRange(s string) (lo, hi int, ok bool, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, 0, false, nil
	}
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false, errors.New("must be MIN-MAX")
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, false, errors.New("must be MIN-MAX with whole numbers")
	case lo < 1024 || hi > 65535 || lo >= hi:
		return 0, 0, false, fmt.Errorf("%w: want 1024 <= MIN < MAX <= 65535", errRange)
	case lo%2 != 0:
		return 0, 0, false, errors.New("MIN must be even (RTP on even ports, RTCP on the next odd one)")
	case hi-lo < 3:
		return 0, 0, false, errors.New("range must hold at least two port pairs")
	}
	return lo, hi, true, nil
}

func portRange(s string) error {
	_, _, _, err := PortRange(s)
	return err
}

func optionalIP(s string) error {
	if s == "" {
		return nil
	}
	if _, err := netip.ParseAddr(s); err != nil {
		return errNotIP
	}
	return nil
}

// TrustedPrefixes parses trusted_networks.
func TrustedPrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR or an IP", f)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func cidrList(s string) error {
	_, err := TrustedPrefixes(s)
	return err
}

// backstop: 0 (never) or 60 s..86400 s, as SPEC §5 says.
func backstop(d time.Duration) error {
	if d == 0 || (d >= 60*time.Second && d <= 86400*time.Second) {
		return nil
	}
	return fmt.Errorf("%w: want 0 (never) or 1m0s..24h0m0s", errRange)
}
