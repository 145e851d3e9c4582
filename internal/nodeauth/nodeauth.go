// Package nodeauth is the proof a media node adds to the requests it sends
// through sipedge with X-Sipedge-* headers (its calls into its own
// conference): an HMAC-SHA256 with the shared node secret over the request's
// identity and a timestamp. The UDP source address alone proves nothing: a
// raw socket forges it.
//
// The header is
//
//	X-Sipedge-Auth: ts=<unix seconds>;mac=<64 hex digits>
//
// and the MAC covers, one per line: a version label, ts, the Call-ID, the
// From tag, the Request-URI user@host:port and the values of
// X-Sipedge-Conference, -Participant, -Role and -Keep-Alive (empty when
// absent). A captured header is useless for another call, another target
// or other participant headers, and for anything after the window.
package nodeauth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"
)

// Header carries the proof.
const Header = "X-Sipedge-Auth"

// DefaultWindow is how far a proof's timestamp may be from the receiver's
// clock, either way.
const DefaultWindow = 30 * time.Second

const label = "sipedge-node-auth-1"

// signed are the headers whose values the MAC covers, in this order.
var signed = [...]string{"X-Sipedge-Conference", "X-Sipedge-Participant", "X-Sipedge-Role", "X-Sipedge-Keep-Alive"}

// Reasons a proof is refused; the proxy counts them by Reason.
var (
	ErrMissing   = errors.New("no " + Header + " header")
	ErrMalformed = errors.New(Header + " malformed")
	ErrExpired   = errors.New(Header + " timestamp outside the window")
	ErrMAC       = errors.New(Header + " MAC mismatch")
	ErrNoSecret  = errors.New("no node secret configured")
)

// Reason is the metric label of a Verify error.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrMissing):
		return "missing"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrMAC):
		return "bad_mac"
	case errors.Is(err, ErrNoSecret):
		return "no_secret"
	}
	return "malformed"
}

// mac computes the HMAC of req's covered fields with ts.
func mac(secret []byte, req *sip.Request, ts string) []byte {
	m := hmac.New(sha256.New, secret)
	line := func(s string) {
		m.Write([]byte(s))
		m.Write([]byte{'\n'})
	}
	line(label)
	line(ts)
	if id := req.CallID(); id != nil {
		line(string(*id))
	} else {
		line("")
	}
	tag := ""
	if f := req.From(); f != nil {
		tag, _ = f.Params.Get("tag")
	}
	line(tag)
	line(req.Recipient.User + "@" + req.Recipient.Host + ":" + strconv.Itoa(req.Recipient.Port))
	for _, name := range signed {
		v := ""
		if h := req.GetHeader(name); h != nil {
			v = strings.TrimSpace(h.Value())
		}
		line(v)
	}
	return m.Sum(nil)
}

// Sign adds the X-Sipedge-Auth header to req (replacing one already there).
// Call it after every covered header is set.
func Sign(req *sip.Request, secret string, now time.Time) {
	for req.RemoveHeader(Header) {
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	req.AppendHeader(sip.NewHeader(Header, "ts="+ts+";mac="+hex.EncodeToString(mac([]byte(secret), req, ts))))
}

// Verify checks req's proof against any of secrets (the current one first;
// more during a rotation) at time now. The MAC is compared in constant time.
func Verify(req *sip.Request, secrets []string, now time.Time, window time.Duration) error {
	h := req.GetHeader(Header)
	if h == nil {
		return ErrMissing
	}
	if len(secrets) == 0 {
		return ErrNoSecret
	}
	ts, sum, err := parse(h.Value())
	if err != nil {
		return err
	}
	sec, _ := strconv.ParseInt(ts, 10, 64)
	if d := now.Sub(time.Unix(sec, 0)); d > window || d < -window {
		return ErrExpired
	}
	for _, s := range secrets {
		if s != "" && hmac.Equal(sum, mac([]byte(s), req, ts)) {
			return nil
		}
	}
	return ErrMAC
}

// parse splits "ts=<digits>;mac=<hex>" (parameters in this order, as Sign
// writes them).
func parse(v string) (ts string, sum []byte, err error) {
	v = strings.TrimSpace(v)
	tsPart, macPart, ok := strings.Cut(v, ";")
	if !ok || !strings.HasPrefix(tsPart, "ts=") || !strings.HasPrefix(macPart, "mac=") {
		return "", nil, ErrMalformed
	}
	ts = tsPart[len("ts="):]
	if ts == "" || len(ts) > 12 || strings.Trim(ts, "0123456789") != "" {
		return "", nil, ErrMalformed
	}
	hexSum := macPart[len("mac="):]
	if len(hexSum) != 2*sha256.Size {
		return "", nil, ErrMalformed
	}
	sum, err = hex.DecodeString(hexSum)
	if err != nil {
		return "", nil, ErrMalformed
	}
	return ts, sum, nil
}

// Shared returns the node secret kept in Redis under key, creating a random
// one first if there is none (SET NX: whichever process starts first wins,
// every other one reads it). sipedge and confnode both call it.
func Shared(ctx context.Context, rdb redis.UniversalClient, key string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate node secret: %w", err)
	}
	if err := rdb.SetNX(ctx, key, hex.EncodeToString(b[:]), 0).Err(); err != nil {
		return "", fmt.Errorf("store node secret %s: %w", key, err)
	}
	s, err := rdb.Get(ctx, key).Result()
	if err != nil {
		return "", fmt.Errorf("read node secret %s: %w", key, err)
	}
	if s == "" {
		return "", fmt.Errorf("node secret %s in redis is empty", key)
	}
	return s, nil
}
