package sdpx

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// crlf turns a readable multi-line literal into wire SDP.
func crlf(s string) []byte {
	return []byte(strings.ReplaceAll(strings.TrimLeft(s, "\n"), "\n", "\r\n"))
}

// Seed SDPs, as endpoints send them.
var (
	// sipp's built-in uac scenario, [local_ip]/[media_port] filled in.
	sdpSipp = crlf(`
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
`)
	// A desktop softphone offering audio and video, session-level c=.
	sdpSoftphone = crlf(`
v=0
o=alice 2890844526 2890844527 IN IP4 192.168.1.20
s=Talk
c=IN IP4 192.168.1.20
b=AS:2048
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
m=audio 7078 RTP/AVP 96 0 8 101
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
m=video 9078 RTP/AVP 97 98
b=AS:1500
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F;packetization-mode=1
a=rtpmap:98 VP8/90000
a=rtcp-fb:97 nack pli
a=X-custom-thing:keep me
`)
	// Media-level c= overriding the session-level one for video only.
	sdpOverride = crlf(`
v=0
o=- 1000 1 IN IP4 10.1.1.1
s=room system
c=IN IP4 10.1.1.1
t=0 0
m=audio 20000 RTP/AVP 9 101
a=rtpmap:9 G722/8000
a=rtpmap:101 telephone-event/8000
m=video 20002 RTP/AVP 96
c=IN IP4 10.1.1.2
a=rtpmap:96 H264/90000
a=recvonly
`)
	// RFC 3605 a=rtcp, port only and with address; no session-level c=.
	sdpRTCP = crlf(`
v=0
o=- 42 7 IN IP4 10.0.0.5
s=-
t=0 0
m=audio 53020 RTP/AVP 0
c=IN IP4 10.0.0.5
a=rtcp:53021
a=rtpmap:0 PCMU/8000
m=audio 53030 RTP/AVP 8
c=IN IP4 10.0.0.5
a=rtcp:53041 IN IP4 10.0.0.1
a=rtpmap:8 PCMA/8000
`)
	// RFC 5761 rtcp-mux with the a=rtcp it recommends.
	sdpMux = crlf(`
v=0
o=- 77 1 IN IP4 172.16.0.9
s=-
c=IN IP4 172.16.0.9
t=0 0
m=audio 40000 RTP/AVP 111
a=rtpmap:111 opus/48000/2
a=rtcp:40000
a=rtcp-mux
`)
	// An answer rejecting video: port 0 stream without its own c=.
	sdpPort0 = crlf(`
v=0
o=bob 5 6 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 49170 RTP/AVP 0
a=rtpmap:0 PCMU/8000
m=video 0 RTP/AVP 31
a=rtpmap:31 H261/90000
a=candidate:1 1 UDP 2130706431 192.0.2.10 50000 typ host
`)
	sdpIPv6 = crlf(`
v=0
o=- 9 9 IN IP6 2001:db8::10
s=-
c=IN IP6 2001:db8::10
t=0 0
m=audio 30000 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
`)
	// ICE-capable client: candidates would let media bypass the relay.
	sdpICE = crlf(`
v=0
o=- 3 2 IN IP4 192.168.0.50
s=-
c=IN IP4 198.51.100.7
t=0 0
a=ice-options:trickle
a=ice-lite
m=audio 61000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=ice-ufrag:F7gI
a=ice-pwd:x9cml/YzichV2+XlhiMu8g
a=candidate:1 1 UDP 2130706431 192.168.0.50 61000 typ host
a=candidate:2 1 UDP 1694498815 198.51.100.7 61000 typ srflx raddr 192.168.0.50 rport 61000
a=candidate:1 2 UDP 2130706430 192.168.0.50 61001 typ host
a=remote-candidates:1 198.51.100.9 62000
a=end-of-candidates
a=sendrecv
`)
	// RFC 2543 style hold in a re-INVITE.
	sdpHold = crlf(`
v=0
o=user1 53655765 2353687638 IN IP4 127.0.0.1
s=-
c=IN IP4 0.0.0.0
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendonly
`)
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestInspect_Streams(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want []Stream
	}{
		{"sipp default PCMU offer", sdpSipp, []Stream{
			{Index: 0, Media: "audio", Proto: "RTP/AVP", Addr: ap("127.0.0.1:6000"), RTCP: ap("127.0.0.1:6001"), Direction: "sendrecv"},
		}},
		{"softphone audio and video", sdpSoftphone, []Stream{
			{Index: 0, Media: "audio", Proto: "RTP/AVP", Addr: ap("192.168.1.20:7078"), RTCP: ap("192.168.1.20:7079"), Direction: "sendrecv"},
			{Index: 1, Media: "video", Proto: "RTP/AVP", Addr: ap("192.168.1.20:9078"), RTCP: ap("192.168.1.20:9079"), Direction: "sendrecv"},
		}},
		{"media-level c= overrides session-level", sdpOverride, []Stream{
			{Index: 0, Media: "audio", Proto: "RTP/AVP", Addr: ap("10.1.1.1:20000"), RTCP: ap("10.1.1.1:20001"), Direction: "sendrecv"},
			{Index: 1, Media: "video", Proto: "RTP/AVP", Addr: ap("10.1.1.2:20002"), RTCP: ap("10.1.1.2:20003"), Direction: "recvonly"},
		}},
		{"a=rtcp port and port with address", sdpRTCP, []Stream{
			{Index: 0, Media: "audio", Proto: "RTP/AVP", Addr: ap("10.0.0.5:53020"), RTCP: ap("10.0.0.5:53021"), Direction: "sendrecv"},
			{Index: 1, Media: "audio", Proto: "RTP/AVP", Addr: ap("10.0.0.5:53030"), RTCP: ap("10.0.0.1:53041"), Direction: "sendrecv"},
		}},
		{"rtcp-mux", sdpMux, []Stream{
			{Index: 0, Media: "audio", Proto: "RTP/AVP", Addr: ap("172.16.0.9:40000"), RTCP: ap("172.16.0.9:40000"), RTCPMux: true, Direction: "sendrecv"},
		}},
		{"port 0 stream is disabled", sdpPort0, []Stream{
			{Index: 0, Media: "audio", Proto: "RTP/AVP", Addr: ap("192.0.2.10:49170"), RTCP: ap("192.0.2.10:49171"), Direction: "sendrecv"},
			{Index: 1, Media: "video", Proto: "RTP/AVP", Disabled: true, Direction: "sendrecv"},
		}},
		{"IPv6", sdpIPv6, []Stream{
			{Index: 0, Media: "audio", Proto: "RTP/AVP", Addr: ap("[2001:db8::10]:30000"), RTCP: ap("[2001:db8::10]:30001"), Direction: "sendrecv"},
		}},
		{"ICE candidates ignored", sdpICE, []Stream{
			{Index: 0, Media: "audio", Proto: "RTP/AVP", Addr: ap("198.51.100.7:61000"), RTCP: ap("198.51.100.7:61001"), Direction: "sendrecv"},
		}},
		{"hold with sendonly and c=0.0.0.0", sdpHold, []Stream{
			{Index: 0, Media: "audio", Proto: "RTP/AVP", Addr: ap("0.0.0.0:6000"), RTCP: ap("0.0.0.0:6001"), Direction: "sendonly"},
		}},
		{"session-level direction inherited", crlf(`
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
a=inactive
m=audio 4000 RTP/AVP 0
m=video 4002 RTP/AVP 96
a=recvonly
`), []Stream{
			{Index: 0, Media: "audio", Proto: "RTP/AVP", Addr: ap("10.0.0.1:4000"), RTCP: ap("10.0.0.1:4001"), Direction: "inactive"},
			{Index: 1, Media: "video", Proto: "RTP/AVP", Addr: ap("10.0.0.1:4002"), RTCP: ap("10.0.0.1:4003"), Direction: "recvonly"},
		}},
		{"bare LF and no final line end", []byte("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\na=rtpmap:0 PCMU/8000"), []Stream{
			{Index: 0, Media: "audio", Proto: "RTP/AVP", Addr: ap("10.0.0.1:4000"), RTCP: ap("10.0.0.1:4001"), Direction: "sendrecv"},
		}},
		{"no m= lines", crlf(`
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
t=0 0
`), []Stream{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Inspect(tt.body)
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Inspect:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestInspect_Errors(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want error
	}{
		{"empty body", nil, ErrUnparsable},
		{"blank body", []byte("\r\n \r\n"), ErrUnparsable},
		{"garbage", []byte("hello, this is not SDP\r\n"), ErrUnparsable},
		{"binary", []byte{0x80, 0x00, 0xff, 0x3d, 0x0a}, ErrUnparsable},
		{"only v=", []byte("v=0\r\n"), ErrUnparsable},
		{"stops after o=", []byte("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n"), ErrUnparsable},
		{"SIP message instead of SDP", []byte("INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"), ErrUnparsable},
		{"no c= for an enabled stream", crlf(`
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
t=0 0
m=audio 4000 RTP/AVP 0
`), ErrUnparsable},
		{"hostname in session c=", crlf(`
v=0
o=- 1 1 IN IP4 pbx.example.com
s=-
c=IN IP4 media.example.com
t=0 0
m=audio 4000 RTP/AVP 0
`), ErrUnsupported},
		{"hostname in media c=", crlf(`
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
m=audio 4000 RTP/AVP 0
c=IN IP4 localhost
`), ErrUnsupported},
		{"hostname in a=rtcp", crlf(`
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
m=audio 4000 RTP/AVP 0
a=rtcp:4001 IN IP4 rtcp.example.com
`), ErrUnsupported},
		{"multicast with TTL", crlf(`
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 224.2.1.1/127
t=0 0
m=audio 4000 RTP/AVP 0
`), ErrUnsupported},
		{"port range", crlf(`
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
m=video 4000/2 RTP/AVP 31
`), ErrUnsupported},
		{"IPv6 literal declared IP4", crlf(`
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 2001:db8::1
t=0 0
m=audio 4000 RTP/AVP 0
`), ErrUnparsable},
		{"bad a=rtcp port", crlf(`
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
m=audio 4000 RTP/AVP 0
a=rtcp:70000
`), ErrUnparsable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Inspect(tt.body)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Inspect = %+v, %v; want %v", got, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "sdpx: ") {
				t.Errorf("error %q lacks the sdpx: prefix", err)
			}
		})
	}
}

// A hostname must be named in the error, so an operator sees why the call
// was refused.
func TestInspect_HostnameReasonInError(t *testing.T) {
	_, err := Inspect(crlf(`
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 media.example.com
t=0 0
m=audio 4000 RTP/AVP 0
`))
	if err == nil || !strings.Contains(err.Error(), `"media.example.com" is not an IP literal`) {
		t.Fatalf("err = %v", err)
	}
}

func TestHasMedia(t *testing.T) {
	tests := []struct {
		name    string
		streams []Stream
		want    bool
	}{
		{"none", nil, false},
		{"audio", []Stream{{Media: "audio"}}, true},
		{"video only", []Stream{{Media: "video"}}, true},
		{"audio disabled", []Stream{{Media: "audio", Disabled: true}}, false},
		{"control only (BFCP)", []Stream{{Media: "application", Proto: "TCP/BFCP"}}, false},
		{"disabled audio and enabled video", []Stream{{Media: "audio", Disabled: true}, {Media: "video"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HasMedia(tt.streams); got != tt.want {
				t.Errorf("HasMedia = %v, want %v", got, tt.want)
			}
		})
	}
}
