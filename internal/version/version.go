// Package version names the build every sipedge binary reports with
// --version and sipedge puts in its User-Agent and start-up log.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is set at link time (-ldflags "-X
// github.com/sipedge/sipedge/internal/version.Version=v1.2.3"); otherwise
// the module version or "dev".
var Version = ""

// Short is the version alone: the link-time value, the module's version
// when built with go install, or "dev".
func Short() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// String is what --version prints: the version, the VCS revision when the
// build recorded one, and the Go toolchain.
func String() string {
	s := Short()
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				rev = kv.Value
			case "vcs.modified":
				if kv.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			s += " (" + rev + dirty + ")"
		}
	}
	return s + " " + runtime.Version()
}
