package proxy

import (
	"context"
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sipedge/sipedge/media"
)

// Media anchors the RTP of calls and follows their participants
// (media.Manager). A nil Media in Options turns anchoring off.
type Media interface {
	Open(callID, confID string, endpointIsCaller bool)
	SDP(callID string, fromCaller bool, body []byte) ([]byte, error)
	Joined(ctx context.Context, j media.Join)
	Ended(callID string)
}

var _ Media = (*media.Manager)(nil)

// TrustFunc says whether a source address may set the X-Sipedge-* headers,
// and which media node it is ("" for a trusted network that is no node).
// It is the address half of trust: trustNew also wants proof (trust.go).
type TrustFunc func(src netip.AddrPort) (node string, trusted bool)

// The headers only media nodes and trusted networks may set (SPEC §5).
const (
	hdrRole        = "X-Sipedge-Role"
	hdrParticipant = "X-Sipedge-Participant" // kind: normal, adp, admin
	hdrKeepAlive   = "X-Sipedge-Keep-Alive"
	hdrConference  = "X-Sipedge-Conference" // a node's own call into this conference
)

var trustedHeaders = [...]string{hdrRole, hdrParticipant, hdrKeepAlive, hdrConference, hdrAuth}

// trust resolves the sender of req.
func (p *Proxy) trust(req *sip.Request) (node string, trusted bool) {
	return p.trustAddr(req.Source())
}

// trustAddr resolves a source address (host:port).
func (p *Proxy) trustAddr(source string) (node string, trusted bool) {
	if p.opts.Trust == nil {
		return "", false
	}
	ap, err := netip.ParseAddrPort(source)
	if err != nil {
		return "", false
	}
	return p.trustAddrPort(ap)
}

// trustAddrPort is trustAddr for a parsed address (IPv4-mapped IPv6 unmapped).
func (p *Proxy) trustAddrPort(ap netip.AddrPort) (node string, trusted bool) {
	if p.opts.Trust == nil {
		return "", false
	}
	return p.opts.Trust(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}

// headerEditor is what removing headers needs of a request or response.
type headerEditor interface {
	Headers() []sip.Header
	RemoveHeader(string) bool
}

// removeTrusted removes every X-Sipedge-* header, whatever the case of its
// name (sipgo's RemoveHeader matches names exactly, GetHeader does not),
// and returns how many it removed.
func removeTrusted(m headerEditor) int {
	n := 0
	for h := firstTrusted(m); h != nil && m.RemoveHeader(h.Name()); h = firstTrusted(m) {
		n++
	}
	return n
}

// stripTrusted removes the X-Sipedge-* headers from a message that came
// from an untrusted source, so they never reach a node as if a node had set
// them, and counts them: a non-zero rate is someone trying.
func (p *Proxy) stripTrusted(m headerEditor) {
	if n := removeTrusted(m); n > 0 {
		p.metrics.strippedHeaders.Add(float64(n))
	}
}

// joinOf is what a new INVITE tells about its participant.
func joinOf(req *sip.Request, confID string, trusted bool, aorOf *sip.Uri) media.Join {
	j := media.Join{CallID: callID(req), ConfID: confID}
	if aorOf != nil {
		j.AOR = aorOf.User + "@" + aorOf.Host
	}
	if trusted {
		j.Role = headerValue(req, hdrRole)
		j.Kind = headerValue(req, hdrParticipant)
		j.KeepAlive = headerValue(req, hdrKeepAlive)
	}
	return j
}

func headerValue(m interface{ Headers() []sip.Header }, name string) string {
	if h := findHeader(m, name); h != nil {
		return strings.TrimSpace(h.Value())
	}
	return ""
}

// sdpMessage is what anchoring needs of a request or a response.
type sdpMessage interface {
	Body() []byte
	SetBody([]byte)
	ContentType() *sip.ContentTypeHeader
}

// hasSDP reports whether m carries an SDP body.
func hasSDP(m sdpMessage) bool {
	if len(m.Body()) == 0 {
		return false
	}
	ct := m.ContentType()
	if ct == nil {
		return false
	}
	v := strings.TrimSpace(ct.Value())
	const sdpType = "application/sdp"
	return len(v) >= len(sdpType) && strings.EqualFold(v[:len(sdpType)], sdpType)
}

// anchor rewrites m's SDP (sent by the caller when fromCaller) so its media
// flows through the relay. Nothing to do returns nil; an error leaves m
// untouched.
func (p *Proxy) anchor(m sdpMessage, id string, fromCaller bool) error {
	if p.media == nil || !hasSDP(m) {
		return nil
	}
	out, err := p.media.SDP(id, fromCaller, m.Body())
	if err != nil {
		return err
	}
	m.SetBody(out)
	return nil
}

// openMedia starts the media session of a new INVITE dialog and anchors
// its offer into out. It reports false when it has answered the request
// itself (488: the SDP cannot be anchored) and nothing must be forwarded.
// endpointIsCaller is false for a node's call into its conference.
func (p *Proxy) openMedia(tx sip.ServerTransaction, req, out *sip.Request, info *fwdInfo, endpointIsCaller bool) bool {
	if p.media == nil {
		return true
	}
	id := callID(req)
	p.media.Open(id, info.confID, endpointIsCaller)
	if fh, ok := p.media.(familyHinter); ok {
		fh.Families(id, hostIsIPv6(req.Source()), hostIsIPv6(out.Destination()))
	}
	info.anchored = true
	if err := p.anchor(out, id, true); err != nil {
		p.mediaEnded(id)
		p.rejectSDP(tx, req, err)
		return false
	}
	p.limitPortsOpened(id)
	return true
}

// familyHinter is the media manager's optional hint of which address
// family each side of a call speaks, for a dual-stack relay.
type familyHinter interface {
	Families(callID string, callerV6, calleeV6 bool)
}

// hostIsIPv6 reports whether a "host:port" names an IPv6 address.
func hostIsIPv6(hostport string) bool {
	ap, err := netip.ParseAddrPort(hostport)
	return err == nil && ap.Addr().Is6() && !ap.Addr().Is4In6()
}

// rejectSDP answers a request whose SDP cannot be anchored: 488 with the
// reason in a Warning header (RFC 3261 §20.43), never a half-rewritten body.
func (p *Proxy) rejectSDP(tx sip.ServerTransaction, req *sip.Request, err error) {
	p.metrics.sdpRejected.WithLabelValues("488").Inc()
	p.log.Info().Str("call_id", callID(req)).Err(err).Msg("SDP cannot be anchored: 488")
	res := sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil)
	res.AppendHeader(sip.NewHeader("Warning", `399 sipedge "`+warningText(err.Error())+`"`))
	p.respond(tx, res)
}

// warningText keeps a Warning header's quoted text valid.
func warningText(s string) string {
	s = strings.NewReplacer(`"`, "'", "\r", " ", "\n", " ", `\`, "/").Replace(s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// mediaEnded tells the media manager a call is over (ports freed).
func (p *Proxy) mediaEnded(id string) {
	if p.media != nil {
		p.media.Ended(id)
		p.limitPortsFreed(id)
	}
}

// EndCalls ends the dialogs held here that match (media.Ender).
func (p *Proxy) EndCalls(ctx context.Context, match func(callID, confID string) bool, reason string) int {
	return p.EndDialogs(ctx, func(d Dialog) bool { return match(d.CallID, d.ConfID) }, reason)
}

var _ media.Ender = (*Proxy)(nil)
