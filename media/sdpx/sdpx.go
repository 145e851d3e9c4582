// Package sdpx inspects and rewrites SDP bodies so that RTP and RTCP flow
// through sipedge's relay ports (SPEC §5). Everything here is a pure
// function of its input: no I/O, no name resolution, no shared state.
// Parsing and marshalling are done by github.com/pion/sdp/v3.
package sdpx

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

var (
	// ErrUnparsable means the body is not SDP sipedge can read: syntax
	// errors, an enabled stream with no connection address, a malformed
	// a=rtcp, or an address that contradicts its address type.
	ErrUnparsable = errors.New("sdpx: unparsable SDP")
	// ErrUnsupported means the body is valid SDP that sipedge will not
	// anchor: a hostname in c= (never resolved), multicast, port ranges.
	ErrUnsupported = errors.New("sdpx: unsupported SDP")
)

// Stream is one m= line as the endpoint that wrote the SDP announced it.
type Stream struct {
	Index int    // m-line index
	Media string // audio, video, application, ...
	Proto string // "RTP/AVP" etc.
	// Addr is where the endpoint wants RTP: the media-level c= address
	// (else session-level) and the m= port. Zero when the stream is
	// disabled. A held stream's c=0.0.0.0 is reported as is.
	Addr netip.AddrPort
	// RTCP is the a=rtcp port (and address if given), else Addr's port+1;
	// equal to Addr with rtcp-mux. Zero when disabled, or when Addr's port
	// is 65535 and nothing says where RTCP goes.
	RTCP      netip.AddrPort
	RTCPMux   bool   // a=rtcp-mux present
	Disabled  bool   // port 0 (rejected/disabled stream): never relayed
	Direction string // sendrecv|sendonly|recvonly|inactive (media, else session, default sendrecv)
}

// Inspect parses body and lists its streams, one per m= line in order.
// Errors wrap ErrUnparsable or ErrUnsupported.
func Inspect(body []byte) (streams []Stream, err error) {
	defer recoverUnparsable(&err)
	_, streams, err = parse(body)
	return streams, err
}

// HasMedia reports whether some enabled audio or video stream exists, i.e.
// whether the participant joined with audio or video rather than
// control-only.
func HasMedia(streams []Stream) bool {
	for _, s := range streams {
		if !s.Disabled && (s.Media == "audio" || s.Media == "video") {
			return true
		}
	}
	return false
}

// recoverUnparsable turns a panic inside pion/sdp into ErrUnparsable, so
// that a hostile body can never take the proxy down.
func recoverUnparsable(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: parser panic: %v", ErrUnparsable, r)
	}
}

// parse unmarshals body and derives its streams.
func parse(body []byte) (*sdp.SessionDescription, []Stream, error) {
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil, nil, fmt.Errorf("%w: empty body", ErrUnparsable)
	}
	text := string(body)
	if text[len(text)-1] != '\n' {
		// pion/sdp rejects a last line without a line end; some
		// endpoints omit it.
		text += "\r\n"
	}
	sd := new(sdp.SessionDescription)
	if err := sd.UnmarshalString(text); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrUnparsable, err)
	}
	// pion/sdp accepts a body that stops early; o=, s= and t= are
	// mandatory (RFC 4566 §5), and t= is reached only through o= and s=.
	if len(sd.TimeDescriptions) == 0 {
		return nil, nil, fmt.Errorf("%w: missing o=, s= or t= line", ErrUnparsable)
	}
	streams, err := inspect(sd)
	if err != nil {
		return nil, nil, err
	}
	return sd, streams, nil
}

func inspect(sd *sdp.SessionDescription) ([]Stream, error) {
	sessDir := direction(sd.Attributes, "sendrecv")
	streams := make([]Stream, len(sd.MediaDescriptions))
	for i, md := range sd.MediaDescriptions {
		s := Stream{
			Index:     i,
			Media:     md.MediaName.Media,
			Proto:     strings.Join(md.MediaName.Protos, "/"),
			Direction: direction(md.Attributes, sessDir),
		}
		_, s.RTCPMux = md.Attribute("rtcp-mux")
		port := md.MediaName.Port.Value
		if port == 0 {
			s.Disabled = true
			streams[i] = s
			continue
		}
		if r := md.MediaName.Port.Range; r != nil && *r != 1 {
			return nil, fmt.Errorf("%w: stream %d: port range %d/%d", ErrUnsupported, i, port, *r)
		}
		ci, line := md.ConnectionInformation, "c="
		if ci == nil {
			ci, line = sd.ConnectionInformation, "session-level c="
		}
		if ci == nil || ci.Address == nil {
			return nil, fmt.Errorf("%w: stream %d: no c= address", ErrUnparsable, i)
		}
		ip, err := connAddr(i, line, ci.AddressType, ci.Address.String())
		if err != nil {
			return nil, err
		}
		s.Addr = netip.AddrPortFrom(ip, uint16(port)) //nolint:gosec // pion checks 0..65535
		s.RTCP, err = rtcpAddr(i, md, s.Addr, s.RTCPMux)
		if err != nil {
			return nil, err
		}
		streams[i] = s
	}
	return streams, nil
}

// connAddr parses the address of a c= line (or of a=rtcp) as an IP
// literal. Hostnames are refused, never resolved. Stream index and line
// name the place in errors.
func connAddr(index int, line, addrType, addr string) (netip.Addr, error) {
	if strings.Contains(addr, "/") {
		return netip.Addr{}, fmt.Errorf("%w: stream %d: %s multicast address %q", ErrUnsupported, index, line, addr)
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: stream %d: %s address %q is not an IP literal (hostnames are not resolved)",
			ErrUnsupported, index, line, addr)
	}
	switch {
	case ip.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%w: stream %d: %s scoped address %q", ErrUnsupported, index, line, addr)
	case ip.IsMulticast():
		return netip.Addr{}, fmt.Errorf("%w: stream %d: %s multicast address %q", ErrUnsupported, index, line, addr)
	case addrType == "IP4" && !ip.Is4(), addrType == "IP6" && !ip.Is6():
		return netip.Addr{}, fmt.Errorf("%w: stream %d: %s address %q is not %s", ErrUnparsable, index, line, addr, addrType)
	}
	return ip, nil
}

// rtcpAddr is where the stream wants RTCP: rtp itself with rtcp-mux, else
// a=rtcp (RFC 3605), else the next port.
func rtcpAddr(index int, md *sdp.MediaDescription, rtp netip.AddrPort, mux bool) (netip.AddrPort, error) {
	v, ok := md.Attribute("rtcp")
	if ok {
		a, _, err := parseRTCPAttr(index, v, rtp.Addr())
		if err != nil {
			return netip.AddrPort{}, err
		}
		if !mux {
			return a, nil
		}
	}
	if mux {
		return rtp, nil
	}
	if rtp.Port() == 65535 {
		return netip.AddrPort{}, nil
	}
	return netip.AddrPortFrom(rtp.Addr(), rtp.Port()+1), nil
}

// parseRTCPAttr reads an a=rtcp value, "port" or "port IN IP4 addr".
// hasAddr reports the second form; def is the address of the first.
func parseRTCPAttr(index int, v string, def netip.Addr) (a netip.AddrPort, hasAddr bool, err error) {
	f := strings.Fields(v)
	if len(f) != 1 && len(f) != 4 {
		return netip.AddrPort{}, false, fmt.Errorf("%w: stream %d: a=rtcp:%s", ErrUnparsable, index, v)
	}
	port, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, false, fmt.Errorf("%w: stream %d: a=rtcp:%s: bad port", ErrUnparsable, index, v)
	}
	if len(f) == 1 {
		return netip.AddrPortFrom(def, uint16(port)), false, nil
	}
	if f[1] != "IN" || (f[2] != "IP4" && f[2] != "IP6") {
		return netip.AddrPort{}, false, fmt.Errorf("%w: stream %d: a=rtcp:%s: bad address type", ErrUnparsable, index, v)
	}
	ip, err := connAddr(index, "a=rtcp", f[2], f[3])
	if err != nil {
		return netip.AddrPort{}, false, err
	}
	return netip.AddrPortFrom(ip, uint16(port)), true, nil
}

// direction is the first direction attribute in attrs, else def.
func direction(attrs []sdp.Attribute, def string) string {
	for _, a := range attrs {
		switch a.Key {
		case "sendrecv", "sendonly", "recvonly", "inactive":
			return a.Key
		}
	}
	return def
}
