package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// echoNode is the far end of the calls: a SIP UAS that answers every
// INVITE with an SDP pointing at a new UDP socket of its own, and sends
// every packet that socket receives back to where it came from (symmetric
// RTP), unchanged. It also answers OPTIONS (the proxies' health probes),
// REGISTER and BYE with 200.
type echoNode struct {
	ip    netip.Addr
	port  int
	mu    sync.Mutex
	calls map[string]*net.UDPConn // Call-ID -> echo socket
}

func runNode(ctx context.Context, listen string) error {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return fmt.Errorf("node --listen %q: %w", listen, err)
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("rtpload-node"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quietLog)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quietLog)))
	if err != nil {
		return err
	}
	defer ua.Close()
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quietLog))
	if err != nil {
		return err
	}
	n := &echoNode{ip: ap.Addr(), port: int(ap.Port()), calls: map[string]*net.UDPConn{}}
	srv.OnInvite(n.onInvite)
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnBye(n.onBye)
	ok := func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	}
	srv.OnOptions(ok)
	srv.OnRegister(ok)
	defer n.closeAll()
	return srv.ListenAndServe(ctx, "udp", listen)
}

func (n *echoNode) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	callID := req.CallID().Value()
	n.mu.Lock()
	conn := n.calls[callID]
	n.mu.Unlock()
	if conn == nil {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: n.ip.AsSlice()})
		if err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 503, "No Socket", nil))
			return
		}
		conn = c
		n.mu.Lock()
		n.calls[callID] = conn
		n.mu.Unlock()
		go echo(conn)
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	res := sip.NewResponseFromRequest(req, 200, "OK", sdpBody("node", n.ip, port))
	if to := res.To(); to != nil {
		if _, has := to.Params.Get("tag"); !has {
			to.Params.Add("tag", "n"+sip.GenerateTagN(10))
		}
	}
	res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "node", Host: n.ip.String(),
		Port: n.port}})
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	_ = tx.Respond(res)
}

func (n *echoNode) onBye(req *sip.Request, tx sip.ServerTransaction) {
	callID := req.CallID().Value()
	n.mu.Lock()
	conn := n.calls[callID]
	delete(n.calls, callID)
	n.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
}

func (n *echoNode) closeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, c := range n.calls {
		c.Close()
		delete(n.calls, id)
	}
}

// echo sends every datagram back to its source until conn is closed.
func echo(conn *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		k, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		_, _ = conn.WriteToUDPAddrPort(buf[:k], from)
	}
}

// sdpBody is a one-stream PCMU offer or answer for ip:port.
func sdpBody(user string, ip netip.Addr, port int) []byte {
	return []byte(fmt.Sprintf("v=0\r\no=%s 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", user, ip, ip, port))
}
