package proxy

import (
	"testing"
)

// The dialog record keeps the caller's From, the node's To and both
// Contacts as they were parsed (nothing changes a parsed header): the
// record, its key and nothing else is allocated per call set up, and what
// it holds still names the dialog.
func TestNewDialogRecord_HoldsTheParsedHeaders(t *testing.T) {
	p := benchProxy()
	in := parseRequest(t, "INVITE sip:conf1@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:40000;branch=z9hG4bK-d1;rport\r\n"+
		"From: \"alice\" <sip:alice@example.com>;tag=caller1\r\nTo: <sip:conf1@example.com>\r\nCall-ID: dr-1\r\n"+
		"CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.3:40000>\r\nContent-Length: 0\r\n\r\n")
	in.SetSource("127.0.0.3:40000")
	res := parseResponse(t, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.3:40000;branch=z9hG4bK-d1;rport=40000;received=127.0.0.3\r\n"+
		"From: \"alice\" <sip:alice@example.com>;tag=caller1\r\nTo: <sip:conf1@example.com>;tag=node1\r\nCall-ID: dr-1\r\n"+
		"CSeq: 1 INVITE\r\nContact: <sip:node@127.0.0.2:5070>\r\nContent-Length: 0\r\n\r\n")
	callerHop, nodeHop := hop{addr: "127.0.0.3:40000", transport: "udp"}, hop{addr: "127.0.0.2:5070", transport: "udp"}
	dl := p.newDialogRecord(in, res, fwdInfo{confID: "conf1", node: "n1"}, callerHop, nodeHop)
	if dl.from != in.From() || dl.to != res.To() {
		t.Errorf("From/To copied, want the parsed headers")
	}
	caller, _ := contactURI(dl.callerContact)
	node, _ := contactURI(dl.nodeContact)
	if dl.callID != "dr-1" || caller.String() != "sip:alice@127.0.0.3:40000" || node.String() != "sip:node@127.0.0.2:5070" {
		t.Errorf("record %q, caller contact %q, node contact %q", dl.callID, caller.String(), node.String())
	}
	if n := testing.AllocsPerRun(100, func() {
		_ = p.newDialogRecord(in, res, fwdInfo{confID: "conf1", node: "n1"}, callerHop, nodeHop)
	}); n > 1 {
		t.Errorf("newDialogRecord: %v allocations, want 1 (the record)", n)
	}
}
