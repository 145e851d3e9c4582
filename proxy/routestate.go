package proxy

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
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
	errRouteSignature = errors.New("sipedge route state not authentic under any route secret")
	errRouteNoSecret  = errors.New("empty route secret")
)

// Token layout (base64url, no padding):
//
//	0x04 | nonce (12 random bytes) | AES-256-GCM(fields) with the 16-byte tag
//
// The version byte is the additional data. Fields are length-prefixed
// (uvarint) in routeState order. A caller sees only random-looking bytes:
// not the node's name or address, nor the instance. The key is
// HKDF-SHA256(route secret, info routeKDFInfo).
const (
	routeVersion = 0x04
	nonceLen     = 12
	tagLen       = 16
	routeFields  = 8
	routeKDFInfo = "sipedge route state v4 aes-256-gcm"
	// maxRouteToken bounds what Decode reads (a route is ~150 characters;
	// a caller's long From tag or conference id makes it longer).
	maxRouteToken = 4096
)

// Version 3 (HMAC-signed, readable) tokens of dialogs set up before the
// upgrade still decode, so those dialogs end normally. Never written.
const (
	legacyVersion = "3"
	legacyMACLen  = 12
	legacySep     = "\x1f"
)

// routeKey is one route secret, ready to use.
type routeKey struct {
	aead   cipher.AEAD
	secret []byte // HMAC key of legacy tokens
}

// routeKeys is one generation of secrets: the first encodes, all decode.
type routeKeys struct{ keys []routeKey }

// routeSigner seals and opens routeState with an AEAD, so a peer can
// neither read the state nor make sipedge relay to a destination sipedge
// did not choose itself. Its secrets can be swapped at run time (rotation);
// copies share them.
type routeSigner struct {
	cur  *atomic.Pointer[routeKeys]
	bufs *sync.Pool // *routeBuf: the AEAD (an interface) makes stack buffers escape
}

// routeBuf is the scratch space of one Encode or Decode.
type routeBuf struct{ raw, plain [maxRouteToken]byte }

// makeRouteSigner returns a signer with no secrets yet (set installs them).
func makeRouteSigner() routeSigner {
	return routeSigner{cur: &atomic.Pointer[routeKeys]{}, bufs: &sync.Pool{New: func() any { return new(routeBuf) }}}
}

// newRouteSigner builds a signer encoding with secrets[0] and decoding with
// any of secrets. It panics on an empty secret (tests and benchmarks only;
// New checks first).
func newRouteSigner(secrets ...string) routeSigner {
	s := makeRouteSigner()
	if err := s.set(secrets); err != nil {
		panic(err)
	}
	return s
}

func newRouteKey(secret string) (routeKey, error) {
	if secret == "" {
		return routeKey{}, errRouteNoSecret
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), nil, routeKDFInfo, 32)
	if err != nil {
		return routeKey{}, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return routeKey{}, err
	}
	aead, err := cipher.NewGCM(block) // stateless: safe for concurrent use
	if err != nil {
		return routeKey{}, err
	}
	return routeKey{aead: aead, secret: []byte(secret)}, nil
}

// set installs secrets (the first encodes; duplicates are dropped).
func (s routeSigner) set(secrets []string) error {
	if len(secrets) == 0 {
		return errRouteNoSecret
	}
	ks := &routeKeys{}
	seen := map[string]bool{}
	for i, sec := range secrets {
		if sec == "" && i > 0 {
			continue
		}
		if seen[sec] {
			continue
		}
		seen[sec] = true
		k, err := newRouteKey(sec)
		if err != nil {
			return err
		}
		ks.keys = append(ks.keys, k)
	}
	s.cur.Store(ks)
	return nil
}

// SetRouteSecrets replaces the route secrets at run time: current encodes
// every new route; current and old (the secrets of a rotation) decode.
func (p *Proxy) SetRouteSecrets(current string, old ...string) error {
	return p.signer.set(append([]string{current}, old...))
}

func appendField(b []byte, f string) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

// Encode returns the value of the routeParam URI parameter.
func (s routeSigner) Encode(st routeState) string {
	var v string
	s.encode(st, func(token []byte) { v = string(token) })
	return v
}

// encode is Encode handing the value to use, which must not keep it (it
// is in a pooled buffer): the Record-Route copies it into its own bytes,
// without a string of its own.
func (s routeSigner) encode(st routeState, use func(token []byte)) {
	k := s.cur.Load().keys[0]
	buf := s.bufs.Get().(*routeBuf)
	defer s.bufs.Put(buf)
	for attempt := 0; ; attempt++ {
		b := append(buf.raw[:0], routeVersion)
		b = b[:1+nonceLen]
		_, _ = rand.Read(b[1 : 1+nonceLen]) // never fails (crypto/rand)
		for _, f := range [routeFields]string{st.NodeName, st.NodeAddr, st.NodeTransport, st.PeerAddr,
			st.PeerTransport, st.FromTag, st.ConfID, st.Instance} {
			b = appendField(b, f)
		}
		head := b[:1+nonceLen]
		b = k.aead.Seal(head, head[1:], b[len(head):], head[:1]) // in place
		enc := base64.RawURLEncoding.AppendEncode(buf.plain[:0], b)
		if !hasCSeq(enc) || attempt == 7 {
			use(enc)
			return
		}
	}
}

// hasCSeq reports whether "CSeq", in any case, is inside a token. sipp
// (3.6.1 and master) finds a response's CSeq method with strstr(msg,
// "CSeq"), the first match anywhere, and the Record-Route carrying the
// token comes above the CSeq header: in about one call of 136 000 the
// random base64 held it, sipp read a garbage method and aborted the call
// (integration TestSippCallers_MatchResponsesWhateverTheRecordRouteHolds).
// The token is legal either way (RFC 3261 §25.1); sealing again with a
// new nonce, about once in 8500 encodings, costs less than the lost call.
func hasCSeq(b []byte) bool {
	for i := 0; i+4 <= len(b); i++ {
		if b[i]|0x20 == 'c' && b[i+1]|0x20 == 's' && b[i+2]|0x20 == 'e' && b[i+3]|0x20 == 'q' {
			return true
		}
	}
	return false
}

// Decode opens a routeParam value with any of the current secrets.
func (s routeSigner) Decode(v string) (routeState, error) {
	st, _, err := s.decode(v)
	return st, err
}

// decode is Decode that also tells which secret opened the route (0: the
// current one).
func (s routeSigner) decode(v string) (routeState, int, error) {
	if len(v) == 0 || len(v) > maxRouteToken {
		return routeState{}, 0, errRouteMalformed
	}
	buf := s.bufs.Get().(*routeBuf)
	defer s.bufs.Put(buf)
	src := buf.plain[:copy(buf.plain[:], v)]
	n, err := base64.RawURLEncoding.Strict().Decode(buf.raw[:], src)
	if err != nil || n == 0 {
		return routeState{}, 0, errRouteMalformed
	}
	raw := buf.raw[:n]
	ks := s.cur.Load().keys
	if raw[0] != routeVersion {
		return decodeLegacy(ks, raw)
	}
	if len(raw) < 1+nonceLen+tagLen {
		return routeState{}, 0, errRouteMalformed
	}
	nonce, sealed := raw[1:1+nonceLen], raw[1+nonceLen:]
	for i, k := range ks {
		// Open into plain (the base64 is decoded): a failed Open may
		// clobber its output, so never in place.
		pt, err := k.aead.Open(buf.plain[:0], nonce, sealed, raw[:1])
		if err == nil {
			st, err := parseFields(pt)
			return st, i, err
		}
	}
	return routeState{}, 0, errRouteSignature
}

// parseFields splits the length-prefixed fields, with one allocation for
// all eight strings.
func parseFields(pt []byte) (routeState, error) {
	all := string(pt)
	var f [routeFields]string
	off := 0
	for i := range f {
		l, n := binary.Uvarint(pt[off:])
		if n <= 0 || l > uint64(len(pt)-off-n) {
			return routeState{}, errRouteMalformed
		}
		off += n
		f[i] = all[off : off+int(l)]
		off += int(l)
	}
	if off != len(pt) {
		return routeState{}, errRouteMalformed
	}
	return routeState{NodeName: f[0], NodeAddr: f[1], NodeTransport: f[2], PeerAddr: f[3],
		PeerTransport: f[4], FromTag: f[5], ConfID: f[6], Instance: f[7]}, nil
}

// decodeLegacy verifies and reads a version 3 token (HMAC-SHA256 truncated
// to 96 bits over the separator-joined fields).
func decodeLegacy(ks []routeKey, raw []byte) (routeState, int, error) {
	if len(raw) <= legacyMACLen {
		return routeState{}, 0, errRouteMalformed
	}
	payload, sum := raw[:len(raw)-legacyMACLen], raw[len(raw)-legacyMACLen:]
	idx := -1
	for i, k := range ks {
		m := hmac.New(sha256.New, k.secret)
		m.Write(payload)
		if hmac.Equal(sum, m.Sum(nil)[:legacyMACLen]) {
			idx = i
			break
		}
	}
	if idx < 0 {
		return routeState{}, 0, errRouteSignature
	}
	f := strings.Split(string(payload), legacySep)
	if len(f) != 9 || f[0] != legacyVersion {
		return routeState{}, 0, errRouteMalformed
	}
	return routeState{NodeName: f[1], NodeAddr: f[2], NodeTransport: f[3], PeerAddr: f[4],
		PeerTransport: f[5], FromTag: f[6], ConfID: f[7], Instance: f[8]}, idx, nil
}
