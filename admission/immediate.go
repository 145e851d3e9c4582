package admission

// Immediate verdicts: the rejections Decide reaches with no I/O at all,
// so the proxy can answer them statelessly (like Kamailio's sl module),
// before any transaction exists. Admit stays the one place a verdict that
// needs Redis (the sticky placement of a conference) is reached.

// Immediate returns the rejection Decide gives req whatever the sticky
// placement of its conference (anyHealthy: some node is alive, so a sticky
// conference could still be placed, ring.Snapshot.AnyHealthy), and true; false when the verdict needs the
// sticky lookup or admits (the caller asks Admit). It does no I/O:
//
//   - the instance rejects new dialogs (deserviced and not the last of its
//     site, or shutting down): 503 or, with Redirect, 302;
//   - a REGISTER or SUBSCRIBE (placed by AOR, never sticky) the ring
//     cannot place: 503 no node;
//   - a new INVITE while no node is healthy (no sticky placement can
//     hold): 503 no node.
func Immediate(req Request, st State, anyHealthy bool) (Verdict, bool) {
	if !req.NewDialog() || req.Key() == "" {
		return Verdict{}, false
	}
	if !st.Instance.Reject && !req.UsesAOR() && anyHealthy {
		return Verdict{}, false // the sticky placement decides
	}
	st.Sticky = ""
	v := Decide(req, st)
	if v.Admit {
		return Verdict{}, false
	}
	return v, true
}

// Rejecting reports whether some new dialog may be rejected with no I/O
// right now (Immediate can answer true): the instance turns new dialogs
// away, or the ring is empty. It is cheap (the cached instance verdict and
// the current snapshot), for the proxy to test on every datagram.
func (a *Admitter) Rejecting() bool {
	if a.Instance().Reject {
		return true
	}
	s := a.nodes.Snapshot()
	return s == nil || s.Ring() == nil || s.Ring().Len() == 0
}

// Immediate is Immediate over this admitter's current state. It neither
// counts nor logs: when the proxy answers the rejection it calls Rejected.
func (a *Admitter) Immediate(req Request) (Verdict, bool) {
	s := a.nodes.Snapshot()
	st := State{Instance: a.Instance(), Nodes: s, RetryAfter: a.cluster.Cluster().Settings.RetryAfter,
		Redirect: a.opts.RedirectDeserviced}
	return Immediate(req, st, s.AnyHealthy())
}

// Rejected counts and logs a rejection of req answered from Immediate's
// verdict v, exactly as Admit counts and logs its own.
func (a *Admitter) Rejected(req Request, v Verdict) { a.rejected(req, v) }

// rejected counts and logs (sampled) one rejection.
func (a *Admitter) rejected(req Request, v Verdict) {
	a.metrics.rejects.WithLabelValues(v.Cause).Inc()
	if ev := a.rejectLog(v.Cause).Info(); ev != nil {
		ev.Str("call_id", req.CallID).Str("method", req.Method).Str("conf_id", req.ConfID).
			Str("aor", req.AOR).Str("reason", v.Reason).Str("cause", v.Cause).Int("code", v.Code).
			Msg("Participant failed to join conference")
	}
}
