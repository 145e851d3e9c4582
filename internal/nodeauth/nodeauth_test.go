package nodeauth

import (
	"errors"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

func nodeInvite(t *testing.T) *sip.Request {
	t.Helper()
	raw := "INVITE sip:bob@127.0.0.9:5099 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-1\r\n" +
		"From: <sip:conf-1@127.0.0.2:5070>;tag=ft1\r\n" +
		"To: <sip:bob@127.0.0.9:5099>\r\n" +
		"Call-ID: cid-1@127.0.0.2\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n" +
		"X-Sipedge-Conference: conf-1\r\nX-Sipedge-Participant: adp\r\nX-Sipedge-Role: host\r\n" +
		"Content-Length: 0\r\n\r\n"
	msg, err := sip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*sip.Request)
}

// reparse sends req through the wire format, as the receiver sees it.
func reparse(t *testing.T, req *sip.Request) *sip.Request {
	t.Helper()
	msg, err := sip.NewParser().ParseSIP([]byte(req.String()))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*sip.Request)
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	secrets := []string{"new-secret", "old-secret"}
	cases := []struct {
		name   string
		edit   func(r *sip.Request) // after signing
		secret string               // signing secret; "" leaves the request unsigned
		at     time.Duration        // verifier's clock minus the signer's
		want   error
	}{
		{name: "signed with the current secret", secret: "new-secret"},
		{name: "signed with the previous secret", secret: "old-secret"},
		{name: "at the edge of the window", secret: "new-secret", at: 30 * time.Second},
		{name: "clock behind within the window", secret: "new-secret", at: -30 * time.Second},
		{name: "unsigned", want: ErrMissing},
		{name: "unknown secret", secret: "guess", want: ErrMAC},
		{name: "too old", secret: "new-secret", at: 31 * time.Second, want: ErrExpired},
		{name: "from the future", secret: "new-secret", at: -31 * time.Second, want: ErrExpired},
		{name: "other target", secret: "new-secret", want: ErrMAC,
			edit: func(r *sip.Request) { r.Recipient.Host = "10.0.0.1" }},
		{name: "other port", secret: "new-secret", want: ErrMAC,
			edit: func(r *sip.Request) { r.Recipient.Port = 5060 }},
		{name: "other call-id", secret: "new-secret", want: ErrMAC,
			edit: func(r *sip.Request) { id := sip.CallIDHeader("cid-2"); r.ReplaceHeader(&id) }},
		{name: "other from tag", secret: "new-secret", want: ErrMAC,
			edit: func(r *sip.Request) { r.From().Params.Add("tag", "ft2") }},
		{name: "role raised", secret: "new-secret", want: ErrMAC,
			edit: func(r *sip.Request) {
				r.RemoveHeader("X-Sipedge-Role")
				r.AppendHeader(sip.NewHeader("X-Sipedge-Role", "guest"))
			}},
		{name: "keep-alive added", secret: "new-secret", want: ErrMAC,
			edit: func(r *sip.Request) { r.AppendHeader(sip.NewHeader("X-Sipedge-Keep-Alive", "yes")) }},
		{name: "mac not hex", secret: "new-secret", want: ErrMalformed,
			edit: func(r *sip.Request) { setAuth(r, "ts=1800000000;mac="+string(make([]byte, 64))) }},
		{name: "ts not a number", secret: "new-secret", want: ErrMalformed,
			edit: func(r *sip.Request) { setAuth(r, "ts=-1;mac=00") }},
		{name: "no mac", secret: "new-secret", want: ErrMalformed,
			edit: func(r *sip.Request) { setAuth(r, "ts=1800000000") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := nodeInvite(t)
			if tc.secret != "" {
				Sign(req, tc.secret, now)
			}
			req = reparse(t, req)
			if tc.edit != nil {
				tc.edit(req)
			}
			err := Verify(req, secrets, now.Add(tc.at), DefaultWindow)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func setAuth(r *sip.Request, v string) {
	r.RemoveHeader(Header)
	r.AppendHeader(sip.NewHeader(Header, v))
}

func TestVerify_NoSecretTrustsNothing(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	req := nodeInvite(t)
	Sign(req, "", now) // a node without the secret signs with an empty key
	if err := Verify(req, nil, now, DefaultWindow); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("Verify with no secrets = %v, want ErrNoSecret", err)
	}
	if err := Verify(req, []string{""}, now, DefaultWindow); !errors.Is(err, ErrMAC) {
		t.Fatalf("Verify with an empty secret = %v, want ErrMAC", err)
	}
}

func TestSign_ReplacesOldProof(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	req := nodeInvite(t)
	Sign(req, "a", now)
	Sign(req, "b", now)
	if n := len(req.GetHeaders(Header)); n != 1 {
		t.Fatalf("%d %s headers after signing twice, want 1", n, Header)
	}
	if err := Verify(reparse(t, req), []string{"b"}, now, DefaultWindow); err != nil {
		t.Fatal(err)
	}
}

func TestReason(t *testing.T) {
	for err, want := range map[error]string{ErrMissing: "missing", ErrExpired: "expired", ErrMAC: "bad_mac",
		ErrMalformed: "malformed", ErrNoSecret: "no_secret"} {
		if got := Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("ts=1800000000;mac=" + string(make([]byte, 64)))
	f.Add("")
	f.Add("ts=;mac=")
	f.Fuzz(func(t *testing.T, v string) {
		req := &sip.Request{Method: sip.INVITE}
		req.AppendHeader(sip.NewHeader(Header, v))
		if err := Verify(req, []string{"k"}, time.Unix(1_800_000_000, 0), DefaultWindow); err == nil {
			t.Fatalf("forged proof %q accepted", v)
		}
	})
}
