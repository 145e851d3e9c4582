package integration

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// Issue 10 item 5 (transport leftovers): a BYE sipedge sends on its own
// (here: media timeout) leaves from the listen address the caller's leg
// uses, the one its Record-Route named, and its Via names that address;
// not the first listen address of the caller's family.
func TestTransport2_OwnByeLeavesFromTheAddressTheCallerUsed(t *testing.T) {
	e := newEnv(t)
	e.writeSettings("media_timeout", "2", "guests_only_timeout", "3600")
	port := strconv.Itoa(freePort(t))
	first, second := "127.0.0.1:"+port, "127.0.0.2:"+port
	se := e.startSipedge("A", "--media-ports", mediaPorts(t), "--listen", first+","+second, "--advertise", first)
	_, _ = e.startConfnode("cn1", "--proxy", first, "--rtp=false")
	se.waitRing(t, 5*time.Second, "cn1")

	u := newRTPUA(t, "far")
	if err := u.dial(second, "t2bye"+svcTag()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	u.sending.Store(false) // silent: ended by sipedge after media_timeout
	var bye sipMsg
	select {
	case bye = <-u.byes:
	case <-time.After(8 * time.Second):
		t.Fatal("no BYE from sipedge within 8 s of the caller going silent")
	}
	if r := bye.Header("reason"); !strings.Contains(r, "media timeout") {
		t.Errorf("BYE Reason %q, want media timeout", r)
	}
	if bye.src != second {
		t.Errorf("sipedge's BYE came from %s, want the address the caller used, %s", bye.src, second)
	}
	if vias := bye.Vias(); len(vias) == 0 || !strings.Contains(vias[0], "UDP "+second+";") {
		t.Errorf("sipedge's BYE top Via %q, want it to name %s", vias, second)
	}
}
