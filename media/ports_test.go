package media

import "testing"

// The proxy charges a call's relay ports to its source and refuses new
// calls near the end of the range: CallPorts and PortUsage tell it.
func TestCallPortsAndPortUsage(t *testing.T) {
	e := newEnv(t)
	in := e.instance("A", withPairs(8))
	if n, c := in.mg.PortUsage(); n != 0 || c != 16 {
		t.Fatalf("empty pool: PortUsage = %d of %d, want 0 of 16", n, c)
	}
	c := in.call(t, "call-1", "conf-1") // one audio stream: two legs, RTP and RTCP each
	if got := in.mg.CallPorts("call-1"); got != 4 {
		t.Errorf("CallPorts = %d, want 4", got)
	}
	if got := in.mg.CallPorts("unknown"); got != 0 {
		t.Errorf("CallPorts of an unknown call = %d, want 0", got)
	}
	if n, cap := in.mg.PortUsage(); n != 4 || cap != 16 {
		t.Errorf("PortUsage = %d of %d, want 4 of 16", n, cap)
	}
	in.mg.Ended(c.id)
	if got := in.mg.CallPorts("call-1"); got != 0 {
		t.Errorf("CallPorts after the end = %d, want 0", got)
	}
	if n, _ := in.mg.PortUsage(); n != 0 {
		t.Errorf("PortUsage after the end = %d, want 0", n)
	}
}
