package admission

// SetShuttingDown turns this instance away from new dialogs (503 with
// Retry-After, reason ReasonShutdown) while in-dialog requests still pass,
// whatever the deservice profiles say: the process is stopping. The
// verdict, /readyz and the published instance state follow at once.
func (a *Admitter) SetShuttingDown(on bool) {
	a.shutdown.Store(on)
	a.Instance() // recompute now: logs the change and refreshes the cache
}

// withShutdown overlays the shutting-down flag on a profile verdict.
func (a *Admitter) withShutdown(v InstanceVerdict) InstanceVerdict {
	if a.shutdown.Load() {
		v.ShuttingDown, v.Reject, v.HeldBack = true, true, false
	}
	return v
}
