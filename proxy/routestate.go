package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"strings"
	"sync"
)

// routeParam is the Record-Route URI parameter that carries a dialog's
// routing state. Every sipedge instance sharing the route secret can read
// it, so in-dialog requests route with no local state and no Redis call.
const routeParam = "se"

// routeState is what sipedge needs to route a dialog's later requests: the
// node it chose (downstream) and the address the caller's request really
// came from (upstream), plus the From tag that tells the two directions apart.
type routeState struct {
	NodeName      string // the node's name in the ring (for call counts)
	NodeAddr      string // host:port of the media node
	NodeTransport string // udp | tcp
	PeerAddr      string // host:port the initial request came from
	PeerTransport string
	FromTag       string // From tag of the initial request
	ConfID        string // conference id (empty for non-conference dialogs)
	Instance      string // the sipedge instance that established the dialog
}

var (
	errRouteMalformed = errors.New("malformed sipedge route state")
	errRouteSignature = errors.New("sipedge route state signature mismatch")
)

const (
	routeVersion = "3"
	macLen       = 12 // truncated HMAC-SHA256: 96 bits is plenty against forgery here
	fieldSep     = "\x1f"
)

// routeSigner encodes and verifies routeState with an HMAC so a peer cannot
// make sipedge relay to a destination sipedge did not choose itself.
type routeSigner struct{ macs *sync.Pool }

func newRouteSigner(secret string) routeSigner {
	key := []byte(secret)
	// HMAC state is reused: building it costs more than hashing a route.
	return routeSigner{macs: &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

func (s routeSigner) mac(payload []byte) []byte {
	m := s.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(payload)
	var sum [sha256.Size]byte
	out := m.Sum(sum[:0])
	s.macs.Put(m)
	return out[:macLen]
}

// Encode returns the value of the routeParam URI parameter.
func (s routeSigner) Encode(st routeState) string {
	payload := strings.Join([]string{routeVersion, st.NodeName, st.NodeAddr, st.NodeTransport,
		st.PeerAddr, st.PeerTransport, st.FromTag, st.ConfID, st.Instance}, fieldSep)
	b := make([]byte, 0, len(payload)+macLen)
	b = append(b, payload...)
	b = append(b, s.mac([]byte(payload))...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode verifies and decodes a routeParam value.
func (s routeSigner) Decode(v string) (routeState, error) {
	raw, err := base64.RawURLEncoding.Strict().DecodeString(v)
	if err != nil || len(raw) <= macLen {
		return routeState{}, errRouteMalformed
	}
	payload, sum := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	if !hmac.Equal(sum, s.mac(payload)) {
		return routeState{}, errRouteSignature
	}
	f := strings.Split(string(payload), fieldSep)
	if len(f) != 9 || f[0] != routeVersion {
		return routeState{}, errRouteMalformed
	}
	return routeState{NodeName: f[1], NodeAddr: f[2], NodeTransport: f[3], PeerAddr: f[4],
		PeerTransport: f[5], FromTag: f[6], ConfID: f[7], Instance: f[8]}, nil
}
