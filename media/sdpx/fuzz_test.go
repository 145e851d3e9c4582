package sdpx

import (
	"errors"
	"net/netip"
	"testing"
)

// FuzzInspectRewrite: no body makes Inspect or Rewrite panic, every failure
// is one of the sentinels, and whatever Inspect accepts Rewrite turns into
// SDP that Inspect reads back pointing at the relays.
func FuzzInspectRewrite(f *testing.F) {
	for _, seed := range [][]byte{
		sdpSipp, sdpSoftphone, sdpOverride, sdpRTCP, sdpMux, sdpPort0, sdpIPv6, sdpICE, sdpHold, sdpAudioOffer,
		nil, []byte("v=0\r\n"), []byte("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 h.example\nt=0 0\nm=audio 1 RTP/AVP 0"),
	} {
		f.Add(seed)
	}
	relayIP := netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, body []byte) {
		streams, err := Inspect(body)
		if err != nil {
			if !errors.Is(err, ErrUnparsable) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Inspect error without sentinel: %v", err)
			}
			return
		}
		relays := make([]Relay, len(streams))
		for i, s := range streams {
			rtp := netip.AddrPortFrom(relayIP, uint16(20000+2*i))
			relays[i] = Relay{RTP: rtp, RTCP: netip.AddrPortFrom(relayIP, rtp.Port()+1)}
			if s.RTCPMux {
				relays[i].RTCP = rtp
			}
		}
		out, err := Rewrite(body, relays)
		if err != nil {
			t.Fatalf("Inspect accepted the body but Rewrite failed: %v", err)
		}
		again, err := Inspect(out)
		if err != nil {
			t.Fatalf("Inspect(Rewrite) failed: %v\n%q", err, out)
		}
		if len(again) != len(streams) {
			t.Fatalf("rewrite changed the m= line count: %d -> %d", len(streams), len(again))
		}
		for i, s := range again {
			if s.Disabled != streams[i].Disabled || (!s.Disabled && (s.Addr != relays[i].RTP || s.RTCP != relays[i].RTCP)) {
				t.Fatalf("stream %d after rewrite: %+v, relay %+v", i, s, relays[i])
			}
		}
	})
}
