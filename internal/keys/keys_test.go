package keys

import "testing"

func TestConfEndMessage(t *testing.T) {
	cases := []struct {
		msg  string
		id   string
		isOK bool
	}{
		{ConfEnd("4711"), "4711", true},
		{"conf-end  spaced ", "spaced", true},
		{"conf-end ", "", false},
		{"reload", "", false},
		{"test", "", false},
	}
	for _, tc := range cases {
		id, ok := ParseConfEnd(tc.msg)
		if id != tc.id || ok != tc.isOK {
			t.Errorf("ParseConfEnd(%q) = %q, %v; want %q, %v", tc.msg, id, ok, tc.id, tc.isOK)
		}
	}
}

func TestParsePlacement(t *testing.T) {
	for _, tc := range []struct {
		msg        string
		id         string
		placed, ok bool
	}{
		{msg: PlacedMessage("c1"), id: "c1", placed: true, ok: true},
		{msg: GoneMessage("c1"), id: "c1", ok: true},
		{msg: PlacedMessage("-x"), id: "-x", placed: true, ok: true},
		{msg: "+", ok: false},
		{msg: "c1", ok: false},
		{msg: "", ok: false},
	} {
		id, placed, ok := ParsePlacement(tc.msg)
		if id != tc.id || placed != tc.placed || ok != tc.ok {
			t.Errorf("ParsePlacement(%q) = %q, %v, %v; want %q, %v, %v", tc.msg, id, placed, ok, tc.id, tc.placed, tc.ok)
		}
	}
}

func TestParseMoved(t *testing.T) {
	for _, tc := range []struct {
		msg string
		id  string
		ok  bool
	}{
		{msg: MovedMessage("c1"), id: "c1", ok: true},
		{msg: MovedMessage("~x"), id: "~x", ok: true},
		{msg: PlacedMessage("c1")},
		{msg: GoneMessage("c1")},
		{msg: "~"},
		{msg: ""},
	} {
		if id, ok := ParseMoved(tc.msg); id != tc.id || ok != tc.ok {
			t.Errorf("ParseMoved(%q) = %q, %v; want %q, %v", tc.msg, id, ok, tc.id, tc.ok)
		}
		if _, _, ok := ParsePlacement(tc.msg); ok && tc.ok {
			t.Errorf("ParsePlacement(%q) takes a move for a placement", tc.msg)
		}
	}
}
