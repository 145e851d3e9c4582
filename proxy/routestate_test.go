package proxy

import (
	"errors"
	"testing"
)

func TestRouteSigner_RoundTrip(t *testing.T) {
	s := newRouteSigner("secret-1")
	st := routeState{NodeName: "n1", NodeAddr: "127.0.0.2:5070", NodeTransport: "udp", PeerAddr: "127.0.0.1:40000",
		PeerTransport: "tcp", FromTag: "abc;def", ConfID: "conf|42"}
	got, err := s.Decode(s.Encode(st))
	if err != nil {
		t.Fatal(err)
	}
	if got != st {
		t.Fatalf("decoded %+v, want %+v", got, st)
	}
}

func TestRouteSigner_RejectsForgery(t *testing.T) {
	s := newRouteSigner("secret-1")
	token := s.Encode(routeState{NodeAddr: "127.0.0.2:5070", NodeTransport: "udp"})
	cases := []struct {
		name  string
		value string
		want  error
	}{
		{"other secret", newRouteSigner("secret-2").Encode(routeState{NodeAddr: "10.0.0.1:5060"}), errRouteSignature},
		{"flipped byte", token[:5] + string(token[5]^1) + token[6:], nil},
		{"truncated", token[:8], nil},
		{"not base64", "!!!", errRouteMalformed},
		{"empty", "", errRouteMalformed},
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

func FuzzRouteSignerDecode(f *testing.F) {
	s := newRouteSigner("k")
	f.Add(s.Encode(routeState{NodeAddr: "127.0.0.1:5060"}))
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, v string) {
		st, err := s.Decode(v)
		if err == nil && s.Encode(st) != v {
			// Only canonical encodings of signed state may decode.
			t.Fatalf("non-canonical %q decoded to %+v", v, st)
		}
	})
}
