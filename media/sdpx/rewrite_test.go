package sdpx

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

// relaysFor gives every m= line a relay on 203.0.113.5, muxed where the
// stream is.
func relaysFor(t testing.TB, body []byte) []Relay {
	t.Helper()
	streams, err := Inspect(body)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	relays := make([]Relay, len(streams))
	for i, s := range streams {
		rtp := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.5"), uint16(30000+10*i))
		relays[i] = Relay{RTP: rtp, RTCP: netip.AddrPortFrom(rtp.Addr(), rtp.Port()+1)}
		if s.RTCPMux {
			relays[i].RTCP = rtp
		}
	}
	return relays
}

func pionParse(t *testing.T, body []byte) *sdp.SessionDescription {
	t.Helper()
	sd := new(sdp.SessionDescription)
	if err := sd.Unmarshal(body); err != nil {
		t.Fatalf("pion/sdp cannot parse %q: %v", body, err)
	}
	return sd
}

func withoutICE(attrs []sdp.Attribute) []sdp.Attribute {
	var kept []sdp.Attribute
	for _, a := range attrs {
		if !isICE(a.Key) {
			kept = append(kept, a)
		}
	}
	return kept
}

func withoutKey(attrs []sdp.Attribute, key string) []sdp.Attribute {
	var kept []sdp.Attribute
	for _, a := range attrs {
		if a.Key != key {
			kept = append(kept, a)
		}
	}
	return kept
}

// checkRewrite holds for every rewrite: CRLF lines, enabled streams at
// their relay with everything but c=, port, a=rtcp and ICE preserved,
// disabled streams untouched, o= versions kept, idempotence.
func checkRewrite(t *testing.T, in []byte, relays []Relay, out []byte) {
	t.Helper()
	if !bytes.HasSuffix(out, []byte("\r\n")) || bytes.Count(out, []byte("\n")) != bytes.Count(out, []byte("\r\n")) ||
		bytes.Count(out, []byte("\r")) != bytes.Count(out, []byte("\r\n")) {
		t.Errorf("output is not CRLF terminated:\n%q", out)
	}
	orig, got := pionParse(t, in), pionParse(t, out)
	origStreams, err := Inspect(in)
	if err != nil {
		t.Fatal(err)
	}
	gotStreams, err := Inspect(out)
	if err != nil {
		t.Fatalf("Inspect(rewritten): %v\n%s", err, out)
	}
	if len(got.MediaDescriptions) != len(orig.MediaDescriptions) || len(gotStreams) != len(origStreams) {
		t.Fatalf("m= lines: got %d, want %d", len(got.MediaDescriptions), len(orig.MediaDescriptions))
	}

	first := -1
	for i, os := range origStreams {
		gs, om, gm := gotStreams[i], orig.MediaDescriptions[i], got.MediaDescriptions[i]
		if os.Disabled {
			if !reflect.DeepEqual(gm, om) || !reflect.DeepEqual(gs, os) {
				t.Errorf("disabled stream %d changed:\n got %+v\nwant %+v", i, gm, om)
			}
			continue
		}
		if first < 0 {
			first = i
		}
		want := os
		want.Addr, want.RTCP = relays[i].RTP, relays[i].RTCP
		if !reflect.DeepEqual(gs, want) {
			t.Errorf("stream %d:\n got %+v\nwant %+v", i, gs, want)
		}
		if gm.ConnectionInformation == nil {
			t.Errorf("stream %d has no media-level c=", i)
		}
		if !reflect.DeepEqual(gm.MediaName.Formats, om.MediaName.Formats) || !reflect.DeepEqual(gm.Bandwidth, om.Bandwidth) {
			t.Errorf("stream %d: formats or bandwidth changed", i)
		}
		if g, w := withoutKey(gm.Attributes, "rtcp"), withoutKey(withoutICE(om.Attributes), "rtcp"); !reflect.DeepEqual(g, w) {
			t.Errorf("stream %d attributes:\n got %v\nwant %v", i, g, w)
		}
		if len(withoutICE(gm.Attributes)) != len(gm.Attributes) {
			t.Errorf("stream %d keeps ICE attributes: %v", i, gm.Attributes)
		}
	}

	wantOrigin := orig.Origin
	if first >= 0 {
		ip := relays[first].RTP.Addr()
		wantOrigin.AddressType, wantOrigin.UnicastAddress = addrType(ip), ip.String()
	}
	if got.Origin != wantOrigin {
		t.Errorf("o=: got %+v, want %+v", got.Origin, wantOrigin)
	}
	if (got.ConnectionInformation == nil) != (orig.ConnectionInformation == nil) {
		t.Errorf("session-level c= presence changed: %v", got.ConnectionInformation)
	} else if got.ConnectionInformation != nil && first >= 0 &&
		got.ConnectionInformation.Address.Address != relays[first].RTP.Addr().String() {
		t.Errorf("session-level c= = %v, want %v", got.ConnectionInformation, relays[first].RTP.Addr())
	}
	if got.SessionName != orig.SessionName || !reflect.DeepEqual(got.Bandwidth, orig.Bandwidth) ||
		!reflect.DeepEqual(got.TimeDescriptions, orig.TimeDescriptions) ||
		!reflect.DeepEqual(got.Attributes, withoutICE(orig.Attributes)) {
		t.Errorf("session-level lines changed:\n%s", out)
	}

	again, err := Rewrite(out, relays)
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("rewriting the rewritten body is not a no-op: %v\n%s\n%s", err, out, again)
	}
}

func TestRewrite(t *testing.T) {
	relay := func(rtp, rtcp string) Relay { return Relay{RTP: ap(rtp), RTCP: ap(rtcp)} }
	muxNoRTCP := bytes.Replace(sdpMux, []byte("a=rtcp:40000\r\n"), nil, 1)

	tests := []struct {
		name   string
		body   []byte
		relays []Relay // nil: relaysFor(body)
		check  func(t *testing.T, out string)
	}{
		{"sipp default PCMU offer", sdpSipp, nil, func(t *testing.T, out string) {
			want := "v=0\r\n" +
				"o=user1 53655765 2353687637 IN IP4 203.0.113.5\r\n" +
				"s=-\r\n" +
				"c=IN IP4 203.0.113.5\r\n" +
				"t=0 0\r\n" +
				"m=audio 30000 RTP/AVP 0\r\n" +
				"c=IN IP4 203.0.113.5\r\n" +
				"a=rtpmap:0 PCMU/8000\r\n"
			if out != want {
				t.Errorf("got\n%q\nwant\n%q", out, want)
			}
		}},
		{"softphone audio and video", sdpSoftphone, nil, func(t *testing.T, out string) {
			mustContain(t, out, "m=audio 30000 RTP/AVP 96 0 8 101\r\nc=IN IP4 203.0.113.5\r\n",
				"m=video 30010 RTP/AVP 97 98\r\nc=IN IP4 203.0.113.5\r\nb=AS:1500\r\n",
				"a=X-custom-thing:keep me\r\n", "s=Talk\r\n", "a=rtcp-xr:", "b=AS:2048\r\n")
			mustNotContain(t, out, "192.168.1.20", "a=rtcp:")
		}},
		{"media-level c= overrides session-level", sdpOverride, nil, func(t *testing.T, out string) {
			mustNotContain(t, out, "10.1.1.")
			mustContain(t, out, "a=recvonly\r\n")
		}},
		{"a=rtcp port and port with address rewritten", sdpRTCP, nil, func(t *testing.T, out string) {
			mustContain(t, out, "a=rtcp:30001\r\n", "a=rtcp:30011 IN IP4 203.0.113.5\r\n")
			mustNotContain(t, out, "10.0.0.", "\r\nc=IN IP4 203.0.113.5\r\nt=")
		}},
		{"rtcp-mux keeps a=rtcp on the RTP port", sdpMux, nil, func(t *testing.T, out string) {
			mustContain(t, out, "m=audio 30000 RTP/AVP 111\r\n", "a=rtcp:30000\r\na=rtcp-mux\r\n")
		}},
		{"rtcp-mux without a=rtcp gets one", muxNoRTCP, nil, func(t *testing.T, out string) {
			mustContain(t, out, "a=rtcp-mux\r\na=rtcp:30000\r\n")
		}},
		{"port 0 stream left as it was", sdpPort0, []Relay{relay("203.0.113.5:30000", "203.0.113.5:30001"), {}},
			func(t *testing.T, out string) {
				mustContain(t, out, "m=video 0 RTP/AVP 31\r\na=rtpmap:31 H261/90000\r\na=candidate:1 1 UDP")
			}},
		{"IPv6 stream, IPv4 relay", sdpIPv6, nil, func(t *testing.T, out string) {
			mustContain(t, out, "o=- 9 9 IN IP4 203.0.113.5\r\n", "c=IN IP4 203.0.113.5\r\n")
			mustNotContain(t, out, "IP6", "2001:db8")
		}},
		{"IPv4 stream, IPv6 relay", sdpSipp, []Relay{relay("[2001:db8::5]:30000", "[2001:db8::5]:30001")},
			func(t *testing.T, out string) {
				mustContain(t, out, "o=user1 53655765 2353687637 IN IP6 2001:db8::5\r\n", "c=IN IP6 2001:db8::5\r\n")
				mustNotContain(t, out, "IP4")
			}},
		{"ICE attributes removed", sdpICE, nil, func(t *testing.T, out string) {
			mustNotContain(t, out, "ice-", "candidate", "192.168.0.50", "198.51.100.")
			mustContain(t, out, "a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
		}},
		{"hold is relayed and stays sendonly", sdpHold, nil, func(t *testing.T, out string) {
			mustContain(t, out, "m=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.5\r\n", "a=sendonly\r\n",
				"o=user1 53655765 2353687638 ")
			mustNotContain(t, out, "0.0.0.0")
		}},
		{"relay RTCP not on the next port adds a=rtcp", sdpSipp, []Relay{relay("203.0.113.5:30000", "203.0.113.5:30005")},
			func(t *testing.T, out string) { mustContain(t, out, "a=rtpmap:0 PCMU/8000\r\na=rtcp:30005\r\n") }},
		{"relay RTCP on another address adds it", sdpSipp, []Relay{relay("203.0.113.5:30000", "203.0.113.6:30001")},
			func(t *testing.T, out string) { mustContain(t, out, "a=rtcp:30001 IN IP4 203.0.113.6\r\n") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			relays := tt.relays
			if relays == nil {
				relays = relaysFor(t, tt.body)
			}
			out, err := Rewrite(tt.body, relays)
			if err != nil {
				t.Fatalf("Rewrite: %v", err)
			}
			checkRewrite(t, tt.body, relays, out)
			tt.check(t, string(out))
		})
	}
}

func TestRewrite_Errors(t *testing.T) {
	one := []Relay{{RTP: ap("203.0.113.5:30000"), RTCP: ap("203.0.113.5:30001")}}
	hostname := bytes.Replace(sdpSipp, []byte("c=IN IP4 127.0.0.1"), []byte("c=IN IP4 media.example.com"), 1)
	tests := []struct {
		name   string
		body   []byte
		relays []Relay
		want   error // nil: any error that is neither sentinel
	}{
		{"empty body", nil, nil, ErrUnparsable},
		{"garbage", []byte("\x00\x01garbage"), one, ErrUnparsable},
		{"hostname in c=", hostname, one, ErrUnsupported},
		{"too few relays", sdpSoftphone, one, nil},
		{"too many relays", sdpSipp, append(one, one...), nil},
		{"no relays", sdpSipp, nil, nil},
		{"zero relay for an enabled stream", sdpSipp, []Relay{{}}, nil},
		{"unspecified relay address", sdpSipp, []Relay{{RTP: ap("0.0.0.0:30000"), RTCP: ap("0.0.0.0:30001")}}, nil},
		{"relay without RTCP", sdpSipp, []Relay{{RTP: ap("203.0.113.5:30000")}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Rewrite(tt.body, tt.relays)
			if err == nil {
				t.Fatalf("Rewrite succeeded:\n%s", out)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == nil && (errors.Is(err, ErrUnparsable) || errors.Is(err, ErrUnsupported)) {
				t.Fatalf("caller error %v blames the SDP", err)
			}
			if !strings.HasPrefix(err.Error(), "sdpx: ") {
				t.Errorf("error %q lacks the sdpx: prefix", err)
			}
		})
	}
}

// Rewrite must not touch the caller's body.
func TestRewrite_InputUnchanged(t *testing.T) {
	in := bytes.Clone(sdpICE)
	if _, err := Rewrite(in, relaysFor(t, in)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(in, sdpICE) {
		t.Fatal("input modified")
	}
}

func mustContain(t *testing.T, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

func mustNotContain(t *testing.T, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if strings.Contains(out, s) {
			t.Errorf("output contains %q:\n%s", s, out)
		}
	}
}

// A typical softphone audio offer, the per-INVITE case.
var sdpAudioOffer = crlf(`
v=0
o=- 3912345678 3912345678 IN IP4 192.168.1.20
s=-
c=IN IP4 192.168.1.20
t=0 0
m=audio 7078 RTP/AVP 9 0 8 101
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
`)

func BenchmarkRewrite(b *testing.B) {
	relays := relaysFor(b, sdpAudioOffer)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Rewrite(sdpAudioOffer, relays); err != nil {
			b.Fatal(err)
		}
	}
}
