package view

import (
	"testing"
	"time"
)

func TestWindow_IncreaseOverTheLastMinute(t *testing.T) {
	var w Window
	t0 := time.Unix(1_700_000_000, 0)
	steps := []struct {
		at    time.Duration
		total float64
		want  float64
	}{
		{0, 10, 0},
		{30 * time.Second, 40, 30},
		{60 * time.Second, 70, 60},
		{90 * time.Second, 70, 30}, // the sample at 0 s has left the window
		{150 * time.Second, 70, 0},
		{151 * time.Second, 5, 5}, // counters reset
	}
	for _, s := range steps {
		if got := w.Add(t0.Add(s.at), s.total); got != s.want {
			t.Errorf("at %v total %v: per minute %v, want %v", s.at, s.total, got, s.want)
		}
	}
}
