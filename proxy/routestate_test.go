package proxy

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

var fullState = routeState{NodeName: "cn-secret-name", NodeAddr: "10.20.30.40:5070", NodeTransport: "udp",
	PeerAddr: "127.0.0.1:40000", PeerTransport: "tcp", FromTag: "abc;def\x1f", ConfID: "conf|42", Instance: "edge-hidden"}

func TestRouteSigner_RoundTrip(t *testing.T) {
	s := newRouteSigner("secret-1")
	cases := []routeState{
		fullState,
		{},
		{NodeAddr: "[2001:db8::1]:5060", FromTag: strings.Repeat("t", 200), ConfID: strings.Repeat("c", 130)},
	}
	for _, st := range cases {
		got, err := s.Decode(s.Encode(st))
		if err != nil {
			t.Fatalf("%+v: %v", st, err)
		}
		if got != st {
			t.Fatalf("decoded %+v, want %+v", got, st)
		}
	}
}

// Issue 8 item 4: the state is encrypted, not just signed: a caller who
// decodes the base64 learns neither the node's name or address nor the
// instance, and two routes of one state are unrelated.
func TestRouteSigner_StateIsUnreadable(t *testing.T) {
	s := newRouteSigner("secret-1")
	a, b := s.Encode(fullState), s.Encode(fullState)
	if a == b {
		t.Fatal("two encodings of one state are equal: nonce not random")
	}
	raw, err := base64.RawURLEncoding.DecodeString(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{fullState.NodeName, fullState.NodeAddr, "10.20.30.40", fullState.Instance,
		fullState.ConfID, fullState.PeerAddr, "udp"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("token reveals %q", secret)
		}
	}
	if raw[0] != routeVersion {
		t.Errorf("version byte %#x, want %#x", raw[0], routeVersion)
	}
	// Compact: the fields plus version, nonce and tag, nothing else.
	plain := 0
	for _, f := range []string{fullState.NodeName, fullState.NodeAddr, fullState.NodeTransport, fullState.PeerAddr,
		fullState.PeerTransport, fullState.FromTag, fullState.ConfID, fullState.Instance} {
		plain += 1 + len(f)
	}
	if want := 1 + nonceLen + plain + tagLen; len(raw) != want {
		t.Errorf("token is %d bytes, want %d", len(raw), want)
	}
}

func TestRouteSigner_RejectsForgery(t *testing.T) {
	s := newRouteSigner("secret-1")
	token := s.Encode(routeState{NodeAddr: "127.0.0.2:5070", NodeTransport: "udp"})
	flip := func(i int) string {
		raw, _ := base64.RawURLEncoding.DecodeString(token)
		raw[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(raw)
	}
	cases := []struct {
		name  string
		value string
		want  error
	}{
		{"other secret", newRouteSigner("secret-2").Encode(routeState{NodeAddr: "10.0.0.1:5060"}), errRouteSignature},
		{"flipped nonce bit", flip(3), errRouteSignature},
		{"flipped ciphertext bit", flip(1 + nonceLen + 2), errRouteSignature},
		{"flipped tag bit", flip(len(token)*6/8 - 1), errRouteSignature},
		{"flipped character", token[:5] + string(token[5]^1) + token[6:], nil},
		{"truncated", token[:20], nil},
		{"header only", token[:(1+nonceLen+tagLen)*4/3], nil},
		{"not base64", "!!!", errRouteMalformed},
		{"empty", "", errRouteMalformed},
		{"too long", strings.Repeat("A", maxRouteToken+4), errRouteMalformed},
		{"legacy token of another secret", legacyToken("secret-2", routeState{NodeAddr: "10.0.0.1:5060"}), errRouteSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Decode(tc.value)
			if err == nil {
				t.Fatal("forged route state accepted")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// Issue 8 item 8: during a rotation an instance encodes with the new
// secret and still opens routes of the old one; a secret it does not hold
// opens nothing.
func TestRouteSigner_Rotation(t *testing.T) {
	oldOnly, rotated, newOnly := newRouteSigner("A"), newRouteSigner("B", "A"), newRouteSigner("B")
	st := routeState{NodeName: "n1", NodeAddr: "127.0.0.2:5070", FromTag: "f"}
	cases := []struct {
		name    string
		encoder routeSigner
		decoder routeSigner
		wantKey int
		wantErr error
	}{
		{"old route, rotated instance", oldOnly, rotated, 1, nil},
		{"new route, rotated instance", rotated, rotated, 0, nil},
		{"rotated instance encodes with the new secret", rotated, newOnly, 0, nil},
		{"old route after the old secret is dropped", oldOnly, newOnly, 0, errRouteSignature},
		{"unknown secret", newRouteSigner("C"), rotated, 0, errRouteSignature},
		{"legacy route of the old secret", routeSigner{}, rotated, 1, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			token := legacyToken("A", st)
			if tc.encoder.cur != nil {
				token = tc.encoder.Encode(st)
			}
			got, key, err := tc.decoder.decode(token)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && (got != st || key != tc.wantKey) {
				t.Errorf("decoded %+v with key %d, want %+v with key %d", got, key, st, tc.wantKey)
			}
		})
	}
}

func TestRouteSigner_SetSwapsSharedSecrets(t *testing.T) {
	s := newRouteSigner("A")
	copyOf := s // the Proxy and its helpers hold copies
	a := s.Encode(fullState)
	if err := s.set([]string{"B", "A"}); err != nil {
		t.Fatal(err)
	}
	if _, key, err := copyOf.decode(a); err != nil || key != 1 {
		t.Fatalf("copy after set: key %d, err %v; want the old secret to open it", key, err)
	}
	if err := s.set([]string{""}); !errors.Is(err, errRouteNoSecret) {
		t.Fatalf("set empty secret = %v, want errRouteNoSecret", err)
	}
	if _, err := copyOf.Decode(copyOf.Encode(fullState)); err != nil {
		t.Fatalf("a refused set changed the secrets: %v", err)
	}
}

// Encode and Decode run on every request of a dialog: one allocation each
// (the token string; the decoded fields share one string).
func TestRouteSigner_Allocations(t *testing.T) {
	s := newRouteSigner("k")
	token := s.Encode(fullState)
	if n := testing.AllocsPerRun(100, func() { _ = s.Encode(fullState) }); n > 1 {
		t.Errorf("Encode allocates %v times, want <= 1", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = s.Decode(token) }); n > 1 {
		t.Errorf("Decode allocates %v times, want <= 1", n)
	}
}

// legacyToken is a version 3 (signed, readable) route as sipedge wrote it
// before encryption.
func legacyToken(secret string, st routeState) string {
	payload := strings.Join([]string{legacyVersion, st.NodeName, st.NodeAddr, st.NodeTransport,
		st.PeerAddr, st.PeerTransport, st.FromTag, st.ConfID, st.Instance}, legacySep)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(append([]byte(payload), m.Sum(nil)[:legacyMACLen]...))
}

func FuzzRouteSignerDecode(f *testing.F) {
	s := newRouteSigner("k")
	// The fuzz workers are other processes with the same key: a seed token
	// made there differs (random nonce), so compare states, not tokens.
	made := []routeState{{NodeAddr: "127.0.0.1:5060"}, fullState}
	f.Add(s.Encode(made[0]))
	f.Add(legacyToken("k", made[1]))
	f.Add("")
	f.Add("AAAA")
	f.Add("BA")
	f.Fuzz(func(t *testing.T, v string) {
		st, err := s.Decode(v)
		if err == nil && st != made[0] && st != made[1] {
			// Only routes sipedge made itself may open.
			t.Fatalf("forged %q decoded to %+v", v, st)
		}
	})
}

// sipp reads a response's CSeq method from the first "CSeq" anywhere in the
// message, and the token sits above the CSeq header: no token holds it, in
// any case. Without the reseal about 1 in 8500 tokens of this size did, so
// 100 000 encodings hold about 12.
func TestRouteSigner_TokenNeverHoldsCSeq(t *testing.T) {
	s := newRouteSigner("secret-1")
	for i := range 100_000 {
		tok := s.Encode(fullState)
		if hasCSeq([]byte(tok)) {
			t.Fatalf("encoding %d holds CSeq: %s", i, tok)
		}
		if i%10_000 == 0 {
			if got, err := s.Decode(tok); err != nil || got != fullState {
				t.Fatalf("encoding %d decodes to %+v, %v", i, got, err)
			}
		}
	}
}

func TestHasCSeq(t *testing.T) {
	for in, want := range map[string]bool{"": false, "CSeq": true, "xxcseqyy": true, "CsEQ": true, "CSe": false, "C-Seq": false, "Cseb": false} {
		if got := hasCSeq([]byte(in)); got != want {
			t.Errorf("hasCSeq(%q) = %v, want %v", in, got, want)
		}
	}
}
