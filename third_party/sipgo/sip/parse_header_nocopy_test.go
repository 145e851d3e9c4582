package sip

import (
	"testing"
)

// sipedge patch 5: the headers parsed from a view of the line must keep
// nothing of it. The line is overwritten after each parse, as the
// transport reuses its read buffer.
func TestParseHeader_NumbersKeepNothingOfTheLine(t *testing.T) {
	hp := HeadersParser(DefaultHeadersParser())
	for _, tc := range []struct{ line, want string }{
		{"CSeq: 4711 INVITE", "4711 INVITE"},
		{"CSeq: 2 BYE", "2 BYE"},
		{"CSeq: 9 FOOBAR", "9 FOOBAR"}, // not a method constant: copied
		{"Max-Forwards: 69", "69"},
		{"Content-Length: 1234", "1234"},
		{"l: 0", "0"},
	} {
		line := []byte(tc.line)
		hs, err := hp.ParseHeader(nil, line)
		if err != nil || len(hs) != 1 {
			t.Fatalf("%q: %v %v", tc.line, hs, err)
		}
		for i := range line {
			line[i] = 'X'
		}
		if got := hs[0].Value(); got != tc.want {
			t.Errorf("%q: value %q after the line was overwritten, want %q", tc.line, got, tc.want)
		}
	}
}

// A parser the user put in the table may keep its text: it gets a copy.
func TestParseHeader_UserParserGetsACopy(t *testing.T) {
	var kept string
	hp := HeadersParser{"cseq": func(name []byte, text string) (Header, error) {
		kept = text
		return headerParserCSeq(name, text)
	}}
	line := []byte("CSeq: 7 ACK")
	if _, err := hp.ParseHeader(nil, line); err != nil {
		t.Fatal(err)
	}
	copy(line, "XXXXXXXXXXX")
	if kept != "7 ACK" {
		t.Errorf("the user's parser kept %q after the line was overwritten, want %q", kept, "7 ACK")
	}
}

func TestParseHeader_NumbersAllocateOnlyTheirHeader(t *testing.T) {
	hp := HeadersParser(DefaultHeadersParser())
	for _, line := range []string{"CSeq: 4711 INVITE", "Max-Forwards: 70", "Content-Length: 1234", "l: 12"} {
		b := []byte(line)
		out := make([]Header, 0, 1)
		if n := testing.AllocsPerRun(100, func() { _, _ = hp.ParseHeader(out[:0], b) }); n != 1 {
			t.Errorf("%q: %v allocs, want 1 (the header)", line, n)
		}
	}
}

func TestInternMethod(t *testing.T) {
	for _, m := range []RequestMethod{INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, MESSAGE, PRACK, UPDATE, PUBLISH} {
		b := []byte(m)
		got := internMethod(string(b))
		if got != m {
			t.Errorf("internMethod(%q) = %q", m, got)
		}
	}
	if got := internMethod("invite"); got != "invite" {
		t.Errorf("internMethod(invite) = %q, want it as it came", got)
	}
}

// BenchmarkParseHeader parses an INVITE's headers as the transport meets
// them: the cost of choosing between a view and a copy is per header.
func BenchmarkParseHeader(b *testing.B) {
	hp := HeadersParser(DefaultHeadersParser())
	lines := [][]byte{
		[]byte("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1-0"),
		[]byte("From: sipp <sip:sipp@127.0.0.1:5060>;tag=1"),
		[]byte("To: <sip:conf1@127.0.0.1:5070>"),
		[]byte("Call-ID: 1-4711@127.0.0.1"),
		[]byte("CSeq: 1 INVITE"),
		[]byte("Contact: sip:sipp@127.0.0.1:5060"),
		[]byte("Max-Forwards: 70"),
		[]byte("Subject: Performance Test"),
		[]byte("Content-Type: application/sdp"),
		[]byte("Content-Length: 135"),
	}
	out := make([]Header, 0, len(lines))
	b.ReportAllocs()
	for b.Loop() {
		out = out[:0]
		for _, l := range lines {
			out, _ = hp.ParseHeader(out, l)
		}
	}
}
