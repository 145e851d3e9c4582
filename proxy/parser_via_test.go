package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// viaCases are Via lines sipgo's parser and sipedge's must read alike:
// the usual ones, every form sipgo's states branch on, and every Via line
// of the torture and fuzz messages in testdata.
func viaCases(tb testing.TB) []string {
	cases := []string{
		"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport",
		"Via: SIP/2.0/UDP 127.0.0.1:5070;rport=5070;branch=z9hG4bK-1;received=192.0.2.1",
		"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport;a=1;b=2;c=3;d",
		"Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK-1",
		"Via: SIP/2.0/UDP host.example.com",
		"Via: SIP/2.0/UDP 127.0.0.1:5070",
		"Via: SIP/2.0/UDP 127.0.0.1:",
		"Via: SIP/2.0/UDP 127.0.0.1:abc;branch=x",
		"Via: SIP/2.0/UDP 127.0.0.1:99999999999999999999;branch=x",
		"Via: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK-6",
		"Via: SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK-6",
		"Via: SIP/2.0/UDP [2001:db8::1]",
		"Via: SIP/2.0/UDP [2001:db8::1]:5070",
		"Via: SIP/2.0/UDP [2001:db8::1]:x;branch=1",
		"Via: SIP/2.0/UDP [2001:db8::1]x",
		"Via: SIP/2.0/UDP [2001:db8::1",
		"Via: SIP / 2.0 / UDP  127.0.0.1:5070 ; branch = z9hG4bK-1",
		"Via: SIP/2.0/UDP 127.0.0.1;branch=\"quoted;value\";x",
		"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1, SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK-2",
		"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-c",
		"Via: SIP/2.0/UDP",
		"Via: SIP/2.0",
		"Via: garbage",
		"Via: ",
		"Via: SIP/2.0/UDP ;branch=1",
		"Via: SIP/2.0/UDP\t127.0.0.1;branch=1",
		"Via: SIP/2.0/UDP 127.0.0.1;;;",
		"Via: SIP/2.0/UDP 127.0.0.1;=x;y=",
		"From: \"alice\" <sip:alice@example.com>;tag=caller-1",
		"From: <sip:alice@example.com;transport=udp>;tag=a;x=1;y",
		"From: sip:alice@example.com;tag=a",
		"From: *",
		"To: *",
		"To: <sip:conf1@example.com>",
		"To: <sip:conf1@example.com>;tag=node-1",
		"t: Bob <sips:bob@[2001:db8::1]:5061>;tag=x",
		"f: <tel:+15551234>;tag=1",
		"From: \"a, b\" <sip:a@b>;tag=1",
		"From: <sip:a@b>, <sip:c@d>",
		"To: <sip:a@b;lr",
		"From: ",
		"To: \"unterminated <sip:a@b>",
	}
	for _, dir := range []string{"testdata/rfc4475", "testdata/rfc5118", "testdata/fuzz"} {
		_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			sc := bufio.NewScanner(bytes.NewReader(b))
			sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
			for sc.Scan() {
				line := bytes.TrimRight(sc.Bytes(), "\r")
				if len(line) > 2 && (bytes.HasPrefix(bytes.ToLower(line), []byte("via:")) || bytes.HasPrefix(bytes.ToLower(line), []byte("v:")) ||
					bytes.HasPrefix(bytes.ToLower(line), []byte("v :")) || bytes.HasPrefix(bytes.ToLower(line), []byte("from")) ||
					bytes.HasPrefix(bytes.ToLower(line), []byte("to")) || bytes.HasPrefix(bytes.ToLower(line), []byte("f:")) ||
					bytes.HasPrefix(bytes.ToLower(line), []byte("t:"))) {
					cases = append(cases, string(line))
				}
			}
			return nil
		})
	}
	if len(cases) < 40 {
		tb.Logf("only %d Via cases (testdata missing?)", len(cases))
	}
	return cases
}

// parsedAlike are the headers sipedge's table parses with its own code
// into sipgo's types (parser_via.go, parser_addr.go).
var parsedAlike = map[string]bool{"via": true, "v": true, "from": true, "f": true, "to": true, "t": true}

// sameVias compares what the two tables make of one header line (other
// headers than Via are not the same by design: parser.go).
func sameVias(line string) error {
	if i := strings.IndexByte(line, ':'); i < 0 {
		return nil
	} else if n := strings.ToLower(strings.TrimSpace(line[:i])); !parsedAlike[n] {
		return nil
	}
	ours, oerr := sip.HeadersParser(headerParsers()).ParseHeader(nil, []byte(line))
	theirs, terr := sip.HeadersParser(sip.DefaultHeadersParser()).ParseHeader(nil, []byte(line))
	if (oerr == nil) != (terr == nil) || (oerr != nil && oerr.Error() != terr.Error()) {
		return fmt.Errorf("%q: error %v, sipgo's %v", line, oerr, terr)
	}
	if len(ours) != len(theirs) {
		return fmt.Errorf("%q: %d headers, sipgo %d", line, len(ours), len(theirs))
	}
	for i := range ours {
		if reflect.TypeOf(ours[i]) != reflect.TypeOf(theirs[i]) {
			return fmt.Errorf("%q: header %d is %T, sipgo's %T", line, i, ours[i], theirs[i])
		}
		o, t := reflect.ValueOf(ours[i]).Elem().Interface(), reflect.ValueOf(theirs[i]).Elem().Interface()
		if !reflect.DeepEqual(o, t) {
			return fmt.Errorf("%q: %#v, sipgo's %#v", line, o, t)
		}
		if ours[i].String() != theirs[i].String() {
			return fmt.Errorf("%q: renders %q, sipgo's %q", line, ours[i].String(), theirs[i].String())
		}
	}
	return nil
}

// Via, From and To parse as sipgo parses them, value for value.
func TestViaParser_AsSipgo(t *testing.T) {
	cases := viaCases(t)
	for _, line := range cases {
		if err := sameVias(line); err != nil {
			t.Error(err)
		}
	}
	t.Logf("%d Via, From and To lines compared", len(cases))
}

// A From or To with its tag costs one allocation fewer than sipgo's (the
// tag's list): 4, the value string, the header and two of sipgo's address
// parser.
func TestAddrParsers_Allocations(t *testing.T) {
	out := make([]sip.Header, 0, 2)
	count := func(hp sip.HeadersParser, line string) float64 {
		return testing.AllocsPerRun(100, func() {
			var err error
			if out, err = hp.ParseHeader(out[:0], []byte(line)); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, line := range []string{"From: \"alice\" <sip:alice@example.com>;tag=caller-1", "To: <sip:conf1@example.com>;tag=node-1"} {
		ours, sipgos := count(headerParsers(), line), count(sip.DefaultHeadersParser(), line)
		if ours > 4 || ours > sipgos-1 {
			t.Errorf("%s: %v allocations, want at most 4 and one fewer than sipgo's %v", line, ours, sipgos)
		}
	}
}

// A caller's Via with its parameters costs one allocation (sipgo's: three
// more, one per parameter appended to a nil list), beside the value string.
func TestViaParser_Allocations(t *testing.T) {
	hp := sip.HeadersParser(headerParsers())
	line := []byte("Via: SIP/2.0/UDP 127.0.0.1:5070;rport=5070;branch=z9hG4bK-1;received=192.0.2.1")
	out := make([]sip.Header, 0, 2)
	if n := testing.AllocsPerRun(100, func() {
		var err error
		if out, err = hp.ParseHeader(out[:0], line); err != nil {
			t.Fatal(err)
		}
	}); n != 2 {
		t.Errorf("a Via with three parameters: %v allocations, want 2 (the value string and the header)", n)
	}
}

func FuzzViaParser(f *testing.F) {
	for _, line := range viaCases(f) {
		f.Add(line)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if err := sameVias(line); err != nil {
			t.Error(err)
		}
	})
}
