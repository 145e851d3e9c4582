package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// errNoCommonCodec means the offer has no audio stream confnode can take
// (it speaks PCMU/8000 only); the INVITE is answered 488.
var errNoCommonCodec = errors.New("offer has no PCMU/8000 audio stream")

// pcmuPT is the static RTP payload type of PCMU/8000 (RFC 3551).
const pcmuPT = "0"

// answerSDP builds confnode's SDP: one audio stream, PCMU/8000, on host:port.
// With an offer (RFC 3264) it answers every offered m-line, accepting the
// first audio stream that carries PCMU and rejecting the others with port 0,
// and mirrors the offered direction. Without an offer (late offer) it builds
// a fresh offer of the same stream.
//
// sessID stays the same for the whole dialog and version goes up by one with
// every new description (RFC 3264 §8).
func answerSDP(offer []byte, host string, port int, sessID, version uint64) ([]byte, error) {
	addrType := "IP4"
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		addrType = "IP6"
	}
	sd := &sdp.SessionDescription{
		Origin: sdp.Origin{
			Username: "confnode", SessionID: sessID, SessionVersion: version,
			NetworkType: "IN", AddressType: addrType, UnicastAddress: host,
		},
		SessionName: "confnode",
		ConnectionInformation: &sdp.ConnectionInformation{
			NetworkType: "IN", AddressType: addrType, Address: &sdp.Address{Address: host},
		},
		TimeDescriptions: []sdp.TimeDescription{{Timing: sdp.Timing{}}},
	}
	audio := func(pt, direction string) *sdp.MediaDescription {
		return &sdp.MediaDescription{
			MediaName: sdp.MediaName{
				Media: "audio", Port: sdp.RangedPort{Value: port},
				Protos: []string{"RTP", "AVP"}, Formats: []string{pt},
			},
			Attributes: []sdp.Attribute{
				sdp.NewAttribute("rtpmap", pt+" PCMU/8000"),
				sdp.NewPropertyAttribute("ptime:20"),
				sdp.NewPropertyAttribute(direction),
			},
		}
	}

	if len(offer) == 0 {
		sd.MediaDescriptions = []*sdp.MediaDescription{audio(pcmuPT, "sendrecv")}
		return sd.Marshal()
	}

	var off sdp.SessionDescription
	if err := off.Unmarshal(offer); err != nil {
		return nil, fmt.Errorf("parse offer: %w", err)
	}
	accepted := false
	for _, m := range off.MediaDescriptions {
		if !accepted && m.MediaName.Media == "audio" && m.MediaName.Port.Value != 0 {
			if pt, ok := pcmuPayloadType(&off, m); ok {
				sd.MediaDescriptions = append(sd.MediaDescriptions, audio(pt, answerDirection(&off, m)))
				accepted = true
				continue
			}
		}
		// Rejected stream: same media and formats, port 0 (RFC 3264 §6).
		sd.MediaDescriptions = append(sd.MediaDescriptions, &sdp.MediaDescription{
			MediaName: sdp.MediaName{
				Media: m.MediaName.Media, Port: sdp.RangedPort{Value: 0},
				Protos: m.MediaName.Protos, Formats: m.MediaName.Formats,
			},
		})
	}
	if !accepted {
		return nil, errNoCommonCodec
	}
	return sd.Marshal()
}

// pcmuPayloadType returns the payload type the offer uses for PCMU/8000.
func pcmuPayloadType(sd *sdp.SessionDescription, m *sdp.MediaDescription) (string, bool) {
	for _, f := range m.MediaName.Formats {
		pt, err := strconv.ParseUint(f, 10, 8)
		if err != nil {
			continue
		}
		if f == pcmuPT {
			return f, true
		}
		if c, err := sd.GetCodecForPayloadType(uint8(pt)); err == nil &&
			strings.EqualFold(c.Name, "PCMU") && c.ClockRate == 8000 {
			return f, true
		}
	}
	return "", false
}

// answerDirection mirrors the offered direction attribute (RFC 3264 §6.1).
func answerDirection(sd *sdp.SessionDescription, m *sdp.MediaDescription) string {
	dirs := []string{"sendrecv", "sendonly", "recvonly", "inactive"}
	dir := "sendrecv"
	found := false
	for _, d := range dirs {
		if _, ok := m.Attribute(d); ok {
			dir, found = d, true
			break
		}
	}
	if !found {
		for _, d := range dirs {
			if _, ok := sd.Attribute(d); ok {
				dir = d
				break
			}
		}
	}
	switch dir {
	case "sendonly":
		return "recvonly"
	case "recvonly":
		return "sendonly"
	}
	return dir
}
