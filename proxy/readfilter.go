package proxy

import "github.com/emiago/sipgo/sip"

// readFilter runs on every datagram (and TCP read) before sipgo parses it
// or creates a transaction, in this order:
//  1. floodFilter: INVITEs of a source above its hard rate are dropped;
//  2. absorb: a retransmission of a finished transaction gets its stored
//     answer again (or is dropped), as the transaction would have done
//     (finished_tx.go);
//  3. noteArrival: a response to an INVITE being relayed gets its place
//     in arrival order (respseq.go);
//  4. statelessFilter: while the instance rejects new dialogs, a new
//     INVITE/REGISTER/SUBSCRIBE is answered without a transaction, and the
//     ACK of that answer absorbed (stateless.go);
//  5. forwardRawACK: a plain ACK of a 2xx is forwarded from its bytes,
//     without a transaction (ack_raw.go).
//
// What none of them takes goes on to sipgo.
func (p *Proxy) readFilter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	data, err := p.floodFilter(info, data)
	if err != nil || len(data) == 0 {
		return data, err
	}
	if p.absorb(info, data) {
		return nil, nil
	}
	p.rseq.noteArrival(info, data) // a response's place among its INVITE's (respseq.go)
	if data = p.statelessFilter(info, data); data == nil || p.forwardRawACK(info, data) {
		return nil, nil
	}
	return data, nil
}
