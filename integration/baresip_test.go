package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A real softphone through sipedge: baresip (Debian's baresip-core, with
// a 440 Hz sine as its microphone) dials a
// conference through sipedge with media anchored, talks for a few
// seconds and hangs up when it quits. sipedge sees it present (its RTP
// reached the relay), the confnode counts its packets, and baresip reports
// the node's audio coming in (RTP crossed the relay back).
func TestRealClient_BaresipCallsIntoConference(t *testing.T) {
	bin, err := exec.LookPath("baresip")
	if err != nil {
		t.Fatal("baresip not found (make deps installs Debian's baresip-core)")
	}
	m := newMediaEnv(t, []string{"media_timeout", "60", "guests_only_timeout", "3600"}, nil)
	dir := t.TempDir()
	sipPort := freePortRun(t, 2) // its TLS transport, where built in, takes the port above
	cfg := strings.Join([]string{
		"sip_listen 127.0.0.1:" + strconv.Itoa(sipPort),
		"audio_player aufile,/dev/null",                                    // nothing is played: the status line shows what arrives
		"audio_source ausine,440", "ausrc_srate 48000", "ausrc_channels 2", // ausine makes 48 kHz stereo only; baresip resamples for PCMU
		"audio_alert aufile,/dev/null",
		"module_path /usr/lib/baresip/modules",
		"module g711.so", "module ausine.so", "module aufile.so",
		"module_app account.so", "module_app menu.so",
		"dns_server 127.0.0.1:53", // never asked: every URI here is an IP
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts"), []byte("<sip:alice@127.0.0.1>;outbound=\"sip:"+m.se.sipAddr()+"\";regint=60\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const conf = "baresip-conf"
	// -n 127.0.0.1: its Contact and SDP name 127.0.0.1, not the machine's address.
	phone := startProc(t, "baresip", bin, "-f", dir, "-n", "127.0.0.1", "-t", "8",
		"-e", "/dial sip:"+conf+"@"+m.se.sipAddr())
	eventually(t, 5*time.Second, "baresip registered through sipedge", func() string {
		if !strings.Contains(phone.log(), "{0/UDP/v4} 200 OK") { // its registration line
			return "no 200 to its REGISTER yet"
		}
		return ""
	})
	var callID string
	eventually(t, 6*time.Second, "baresip present in the conference", func() string {
		for id, rec := range m.participants(conf) {
			if rec["present"] == true {
				callID = id
				return ""
			}
		}
		return fmt.Sprintf("participants %v", m.participants(conf))
	})
	select {
	case <-phone.done:
	case <-time.After(15 * time.Second):
		t.Fatal("baresip did not quit")
	}
	eventually(t, 5*time.Second, "the node logged the call's end (baresip's BYE)", func() string {
		if m.nodeEnded(callID) == nil {
			return "not yet"
		}
		return ""
	})
	if rcv, _ := m.nodeEnded(callID)["rtp_received"].(float64); rcv < 50 {
		t.Errorf("the node received %v RTP packets from baresip, want at least 50 (several seconds at 20 ms)", rcv)
	}
	// Its status line, "audio=RX/TX (bit/s)", twice a second while the
	// call is up: the last one must show PCMU's 64 kbit/s coming in (the
	// node's RTP crossed the relay back) and going out.
	rates := regexp.MustCompile(`audio=(\d+)/(\d+) \(bit/s\)`).FindAllStringSubmatch(phone.log(), -1)
	if len(rates) == 0 {
		t.Fatalf("baresip printed no audio status:\n%s", phone.log())
	}
	last := rates[len(rates)-1]
	rx, _ := strconv.Atoi(last[1])
	tx, _ := strconv.Atoi(last[2])
	if rx < 32000 || tx < 32000 {
		t.Errorf("baresip's last audio status rx %d tx %d bit/s, want both near PCMU's 64000", rx, tx)
	}
	m.waitNoConferences(5 * time.Second)
}
