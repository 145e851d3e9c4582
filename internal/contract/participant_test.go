package contract

import (
	"errors"
	"testing"

	"github.com/sipedge/sipedge/internal/keys"
)

func TestParseParticipant(t *testing.T) {
	k := keys.New("sipedge:")
	cases := []struct {
		name, raw string
		want      error // nil: valid
	}{
		{"valid", `{"call_id":"x","instance":"a","role":"host","kind":"normal","keep_alive":"yes","present":true}`, nil},
		{"keep_alive empty is the kind's default", `{"instance":"a","role":"guest","kind":"adp"}`, nil},
		{"not JSON", `{"instance":`, ErrBadJSON},
		{"role outside the contract", `{"instance":"a","role":"boss","kind":"normal"}`, ErrUnknown},
		{"kind outside the contract", `{"instance":"a","role":"host","kind":"robot"}`, ErrUnknown},
		{"keep_alive outside the contract", `{"instance":"a","role":"host","kind":"admin","keep_alive":"always"}`, ErrUnknown},
		{"no instance", `{"role":"host","kind":"normal"}`, ErrMissing},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, bad := ParseParticipant(k, "c1", "field-id", c.raw)
			if p.CallID != "field-id" {
				t.Errorf("CallID = %q, want the hash field %q", p.CallID, "field-id")
			}
			if c.want == nil {
				if bad != nil {
					t.Fatalf("unexpected error: %v", bad)
				}
				return
			}
			if bad == nil || !errors.Is(bad, c.want) {
				t.Fatalf("error = %v, want %v", bad, c.want)
			}
			if bad.Key != "sipedge:participants:c1" || bad.Field != "field-id" || bad.Value != c.raw {
				t.Errorf("error names %s/%s=%q, want the participants hash, the Call-ID and the raw value", bad.Key, bad.Field, bad.Value)
			}
		})
	}
}

func TestParseDial(t *testing.T) {
	k := keys.New("sipedge:")
	cases := []struct {
		name, raw, field string
		want             error
	}{
		{"valid", `{"conf":"c1","uri":"sip:bob@127.0.0.1","kind":"adp","role":"guest","keep_alive":"no"}`, "", nil},
		{"role and keep_alive may be empty", `{"conf":"c1","uri":"sip:bob@127.0.0.1","kind":"admin"}`, "", nil},
		{"not JSON", `[1,2]`, "", ErrBadJSON},
		{"no conf", `{"uri":"sip:bob@127.0.0.1","kind":"adp"}`, "conf", ErrMissing},
		{"conf with a space", `{"conf":"c 1","uri":"sip:bob@127.0.0.1","kind":"adp"}`, "conf", ErrNotID},
		{"kind normal is not dialled", `{"conf":"c1","uri":"sip:bob@127.0.0.1","kind":"normal"}`, "kind", ErrUnknown},
		{"bad role", `{"conf":"c1","uri":"sip:bob@127.0.0.1","kind":"adp","role":"boss"}`, "role", ErrUnknown},
		{"bad keep_alive", `{"conf":"c1","uri":"sip:bob@127.0.0.1","kind":"adp","keep_alive":"maybe"}`, "keep_alive", ErrUnknown},
		{"no uri", `{"conf":"c1","kind":"adp"}`, "uri", ErrMissing},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, bad := ParseDial(k, "n1", c.raw)
			if c.want == nil {
				if bad != nil {
					t.Fatalf("unexpected error: %v", bad)
				}
				return
			}
			if bad == nil || !errors.Is(bad, c.want) || bad.Field != c.field || bad.Key != "sipedge:dial:n1" {
				t.Fatalf("error = %+v, want %v on field %q of sipedge:dial:n1", bad, c.want, c.field)
			}
		})
	}
}

func TestParseMediaCounters(t *testing.T) {
	k := keys.New("sipedge:")
	c, bad := ParseMediaCounters(k, "a", "x", `{"conf":"c1","packets":10,"at_ms":5}`)
	if bad != nil || c.Packets != 10 || c.Conf != "c1" || c.AtMs != 5 {
		t.Fatalf("got %+v, %v", c, bad)
	}
	if _, bad := ParseMediaCounters(k, "a", "x", `nope`); bad == nil || !errors.Is(bad, ErrBadJSON) || bad.Key != "sipedge:media_stats:a" {
		t.Fatalf("bad JSON: got %v", bad)
	}
}
