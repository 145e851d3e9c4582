package media

import (
	"context"
	"testing"
	"time"

	"github.com/sipedge/sipedge/media/policy"
)

// SIGHUP: new YAML defaults apply at the next refresh, and a value set in
// sipedge:settings still overrides them.
func TestSetDefaults_AppliesAtTheNextRefreshUnderRedisValues(t *testing.T) {
	e := newEnv(t)
	in := e.instance("A") // defaults: media 60 s, guests-only 60 s, backstop 0
	in.mg.refreshSettings(context.Background(), t0)
	in.mg.SetDefaults(Settings{MediaTimeout: 20 * time.Second, Policy: policy.Settings{GuestsOnly: 10 * time.Second}})
	in.mg.refreshSettings(context.Background(), t0.Add(100*time.Millisecond)) // due at once, not after 1 s
	want := Settings{20 * time.Second, policy.Settings{GuestsOnly: 10 * time.Second}}
	if got := in.mg.settings.get(); got != want {
		t.Fatalf("after SetDefaults: %+v, want %+v", got, want)
	}
	e.mr.HSet(e.k.Settings(), "media_timeout", "45")
	in.mg.refreshSettings(context.Background(), t0.Add(2*time.Second))
	want.MediaTimeout = 45 * time.Second
	if got := in.mg.settings.get(); got != want {
		t.Errorf("with media_timeout in Redis: %+v, want %+v", got, want)
	}
}
