package admission

import "github.com/sipedge/sipedge/internal/contract"

// Settings are the run-time settings of sipedge:settings (SPEC §2), parsed
// by the contract package. The YAML file gives the defaults; Redis
// overrides them while sipedge runs.
type Settings = contract.Settings

// DefaultSettings are SPEC's defaults.
func DefaultSettings() Settings { return contract.DefaultSettings() }
