package sdpx

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/pion/sdp/v3"
)

// Relay is the sipedge address that replaces one stream's address.
type Relay struct {
	RTP  netip.AddrPort
	RTCP netip.AddrPort // == RTP when the stream uses rtcp-mux
}

// isICE tells the attributes Rewrite drops: candidates would let media
// bypass the relay, and the rest is meaningless without them.
func isICE(key string) bool {
	switch key {
	case "candidate", "remote-candidates", "end-of-candidates",
		"ice-ufrag", "ice-pwd", "ice-options", "ice-lite", "ice-mismatch":
		return true
	}
	return false
}

// Rewrite returns body with every enabled stream i pointing at relays[i]:
// media-level c= set (added when the stream relied on the session-level
// one), m= port set, a=rtcp set to the relay RTCP port when it was present
// or when the relay's RTCP is not the next port, a=rtcp-mux kept. The
// session-level c= (if any) and the o= address take the first enabled
// relay's address; o= versions are kept so the endpoint's re-INVITE
// versioning stays intact. ICE attributes are removed. Disabled streams
// (port 0) are left exactly as they were and their relays entries ignored.
// Everything else is preserved in order. len(relays) must equal the number
// of m= lines. The output is CRLF terminated.
func Rewrite(body []byte, relays []Relay) (out []byte, err error) {
	defer recoverUnparsable(&err)
	sd, streams, err := parse(body)
	if err != nil {
		return nil, err
	}
	if len(relays) != len(streams) {
		return nil, fmt.Errorf("sdpx: rewrite: %d relays for %d m= lines", len(relays), len(streams))
	}
	first := -1
	for i, md := range sd.MediaDescriptions {
		if streams[i].Disabled {
			continue
		}
		r := relays[i]
		if !validRelay(r.RTP) || !validRelay(r.RTCP) {
			return nil, fmt.Errorf("sdpx: rewrite: stream %d: invalid relay %v/%v", i, r.RTP, r.RTCP)
		}
		if first < 0 {
			first = i
		}
		md.MediaName.Port.Value = int(r.RTP.Port())
		md.ConnectionInformation = connInfo(r.RTP.Addr())
		md.Attributes = rewriteMediaAttrs(md.Attributes, r)
	}
	if first >= 0 {
		ip := relays[first].RTP.Addr().Unmap()
		sd.Origin.AddressType, sd.Origin.UnicastAddress = addrType(ip), ip.String()
		if sd.ConnectionInformation != nil {
			sd.ConnectionInformation = connInfo(ip)
		}
	}
	sd.Attributes = dropICE(sd.Attributes)
	out, err = sd.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: marshal: %w", ErrUnparsable, err)
	}
	return out, nil
}

func validRelay(a netip.AddrPort) bool {
	return a.IsValid() && a.Port() != 0 && !a.Addr().IsUnspecified() && a.Addr().Zone() == ""
}

func addrType(ip netip.Addr) string {
	if ip.Is4() {
		return "IP4"
	}
	return "IP6"
}

func connInfo(ip netip.Addr) *sdp.ConnectionInformation {
	ip = ip.Unmap()
	return &sdp.ConnectionInformation{
		NetworkType: "IN",
		AddressType: addrType(ip),
		Address:     &sdp.Address{Address: ip.String()},
	}
}

// rewriteMediaAttrs drops ICE and points a=rtcp at the relay, in place.
func rewriteMediaAttrs(attrs []sdp.Attribute, r Relay) []sdp.Attribute {
	rtp, rtcp := r.RTP.Addr().Unmap(), r.RTCP.Addr().Unmap()
	hadRTCP, rtcpWithAddr := false, rtcp != rtp
	for _, a := range attrs {
		if a.Key == "rtcp" {
			hadRTCP = true
			// Invalid values were rejected by parse.
			if _, withAddr, err := parseRTCPAttr(0, a.Value, netip.Addr{}); err == nil && withAddr {
				rtcpWithAddr = true
			}
		}
	}
	value := strconv.Itoa(int(r.RTCP.Port()))
	if rtcpWithAddr {
		value += " IN " + addrType(rtcp) + " " + rtcp.String()
	}
	kept := attrs[:0]
	wroteRTCP := false
	for _, a := range attrs {
		switch {
		case isICE(a.Key):
			continue
		case a.Key == "rtcp":
			if wroteRTCP {
				continue // a duplicate a=rtcp would contradict the relay
			}
			a.Value, wroteRTCP = value, true
		}
		kept = append(kept, a)
	}
	if !hadRTCP && (int(r.RTCP.Port()) != int(r.RTP.Port())+1 || rtcpWithAddr) {
		kept = append(kept, sdp.NewAttribute("rtcp", value))
	}
	return kept
}

func dropICE(attrs []sdp.Attribute) []sdp.Attribute {
	kept := attrs[:0]
	for _, a := range attrs {
		if !isICE(a.Key) {
			kept = append(kept, a)
		}
	}
	return kept
}
