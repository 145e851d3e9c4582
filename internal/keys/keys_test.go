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
