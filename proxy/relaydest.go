package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// relayTo gives a response relayed upstream (upstream took sipedge's Via
// off) the destination sipgo would compute from the Via now on top
// (received, else the Via host; rport, else the Via port; RFC 3261
// §18.2.2, RFC 3581), as in's own source string when that is where it
// points: the usual case, since markReceived wrote that source into the
// Via the next hop echoed back. sipgo would otherwise build the string
// with fmt.Sprintf on every send, after a failed net.ParseIP of the empty
// destination. Any other Via is left to sipgo.
func relayTo(r *sip.Response, in *sip.Request) {
	if r == nil || in == nil {
		return
	}
	via := r.Via()
	if via == nil {
		return
	}
	src := in.Source()
	shost, sport, err := net.SplitHostPort(src)
	if err != nil {
		return
	}
	host, port := via.Host, via.Port
	if port <= 0 {
		port = int(sip.DefaultPort(r.Transport()))
	}
	if via.Params != nil {
		if rcv, ok := via.Params.Get("received"); ok && rcv != "" {
			host = rcv
		}
		if rp, ok := via.Params.Get("rport"); ok && rp != "" {
			if n, err := strconv.Atoi(rp); err == nil {
				port = n
			}
		}
	}
	if n, err := strconv.Atoi(sport); err != nil || n != port || strings.Trim(host, "[]") != shost {
		return
	}
	r.SetDestination(src)
}

// writeRendered sends res from udp as sipgo's UDPConnection.WriteMsg
// does (same bytes, same socket, the same refusal above the MTU), written
// with writeUDP when its destination is an address: WriteMsg would parse
// that address again into a net.IP and a *net.UDPAddr for every send.
// A destination that is not an IP address and port is left to WriteMsg.
func writeRendered(udp *sip.UDPConnection, res *sip.Response) error {
	dest, err := netip.ParseAddrPort(res.Destination())
	if err != nil || dest.Port() == 0 {
		return udp.WriteMsg(res)
	}
	buf := renderPool.Get().(*bytes.Buffer)
	defer renderPool.Put(buf)
	buf.Reset()
	res.StringWrite(buf)
	if buf.Len() > sip.UDPMTUSize-200 {
		return sip.ErrUDPMTUCongestion
	}
	if err := writeUDP(udp.PacketConn, buf.Bytes(), dest); err != nil {
		return fmt.Errorf("udp conn %s err. %w", udp.PacketConn.LocalAddr(), err)
	}
	return nil
}
