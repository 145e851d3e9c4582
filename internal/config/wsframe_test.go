package config

import (
	"errors"
	"io"
	"testing"
	"time"
)

// ws_frame_timeout: 5 s by default, 0 turns it off, a value outside
// 0..1h or that is no duration is refused naming the field.
func TestWSFrameTimeout_DefaultAndBadValuesNamed(t *testing.T) {
	if d := Default().WSFrameTimeout; d != 5*time.Second {
		t.Errorf("default ws_frame_timeout %v, want 5s", d)
	}
	for _, tc := range []struct {
		value string
		ok    bool
		want  time.Duration
	}{
		{"2s", true, 2 * time.Second},
		{"0s", true, 0},
		{"-1s", false, 0},
		{"2h", false, 0},
		{"soon", false, 0},
	} {
		cfg, err := Load([]string{"--ws-frame-timeout", tc.value}, env(nil), io.Discard)
		var fe *FieldError
		switch {
		case tc.ok && (err != nil || cfg.WSFrameTimeout != tc.want):
			t.Errorf("%s: %v %v, want %v", tc.value, cfg.WSFrameTimeout, err, tc.want)
		case !tc.ok && (!errors.As(err, &fe) || fe.Field != "ws_frame_timeout"):
			t.Errorf("%s: err %v, want a FieldError naming ws_frame_timeout", tc.value, err)
		}
	}
}
