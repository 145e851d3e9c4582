package integration

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
)

// rtpUA is a SIP endpoint with real RTP for the media tests: a caller
// (dial) or a callee (answer), on its own UDP sockets for SIP and RTP. It
// sends PCMU every 20 ms to the address in the other side's SDP (sipedge's
// relay) until told to stop, counts what it receives, and answers BYEs,
// keeping their Reason header.
type rtpUA struct {
	t        testing.TB
	name     string
	ip       netip.Addr // of its sockets, and in its SDP
	aor      string     // user@127.0.0.1
	sip, rtp *net.UDPConn

	mu       sync.Mutex
	callID   string
	localTag string
	peerTag  string
	routes   []string // route set (Record-Route of the 2xx, in order)
	target   string   // Request-URI of in-dialog requests (peer Contact)
	next     string   // where in-dialog requests are sent (sipedge)
	cseq     int
	media    netip.AddrPort // where our RTP goes
	asCaller bool
	// sdpPort, when set, is announced in SDP instead of the RTP socket's
	// port: the endpoint behaves like one behind NAT, whose packets come
	// from another address than the one it announced.
	sdpPort int

	sending  atomic.Bool
	sent     atomic.Uint64
	received atomic.Uint64
	byes     chan sipMsg   // BYEs received
	finals   chan sipMsg   // final responses to our requests
	invites  chan sipMsg   // INVITEs received (callee)
	stop     chan struct{} // closes the goroutines
	wg       sync.WaitGroup
}

func newRTPUA(t testing.TB, name string) *rtpUA {
	t.Helper()
	return newRTPUAOn(t, name, netip.MustParseAddr("127.0.0.1"))
}

// newRTPUAOn is an rtpUA whose SIP and RTP sockets are on ip.
func newRTPUAOn(t testing.TB, name string, ip netip.Addr) *rtpUA {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			t.Fatalf("ua %s: %v", name, err)
		}
		_ = c.SetReadBuffer(1 << 20)
		return c
	}
	host := ip.String()
	if ip.Is6() {
		host = "[" + host + "]"
	}
	u := &rtpUA{t: t, name: name, ip: ip, aor: name + "@" + host, sip: listen(), rtp: listen(),
		byes: make(chan sipMsg, 4), finals: make(chan sipMsg, 16), invites: make(chan sipMsg, 4),
		stop: make(chan struct{}), localTag: svcTag()}
	u.wg.Add(3)
	go u.readSIP()
	go u.readRTP()
	go u.sendRTP()
	t.Cleanup(u.close)
	return u
}

func (u *rtpUA) sipAddr() string { return u.sip.LocalAddr().String() }
func (u *rtpUA) rtpPort() int    { return u.rtp.LocalAddr().(*net.UDPAddr).Port }

func (u *rtpUA) close() {
	select {
	case <-u.stop:
		return
	default:
	}
	close(u.stop)
	u.sip.Close()
	u.rtp.Close()
	u.wg.Wait()
}

func (u *rtpUA) sdp() string {
	port := u.rtpPort()
	if u.sdpPort != 0 {
		port = u.sdpPort
	}
	at := "IP4 " + u.ip.String()
	if u.ip.Is6() {
		at = "IP6 " + u.ip.String()
	}
	return "v=0\r\no=" + u.name + " 1 1 IN " + at + "\r\ns=-\r\nc=IN " + at + "\r\nt=0 0\r\n" +
		"m=audio " + strconv.Itoa(port) + " RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
}

// dial places a call to conference conf through sipedge at via and waits
// for the answer; RTP starts at once. extra headers go into the INVITE.
func (u *rtpUA) dial(via, conf string, extra ...string) error {
	u.mu.Lock()
	u.callID, u.asCaller, u.next, u.cseq = "rtp-"+u.name+"-"+svcTag(), true, via, 1
	body := u.sdp()
	branch := "z9hG4bK" + svcTag()
	req := "INVITE sip:" + conf + "@" + via + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + u.sipAddr() + ";branch=" + branch + ";rport\r\n" +
		"From: <sip:" + u.aor + ">;tag=" + u.localTag + "\r\n" +
		"To: <sip:" + conf + "@" + via + ">\r\n" +
		"Call-ID: " + u.callID + "\r\nCSeq: 1 INVITE\r\n" +
		"Contact: <sip:" + u.name + "@" + u.sipAddr() + ">\r\nMax-Forwards: 70\r\n"
	for _, h := range extra {
		req += h + "\r\n"
	}
	req += "Content-Type: application/sdp\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	u.mu.Unlock()

	deadline := time.Now().Add(5 * time.Second)
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		u.send(via, req)
		select {
		case m := <-u.finals:
			if m.Code != 200 {
				u.ack(m, branch)
				return fmt.Errorf("ua %s: INVITE answered %d", u.name, m.Code)
			}
			if err := u.established(m, true); err != nil {
				return err
			}
			u.ack(m, "z9hG4bK"+svcTag())
			u.sending.Store(true)
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("ua %s: no answer to INVITE", u.name)
}

// answer waits for an INVITE (a node's call through sipedge) and accepts it.
func (u *rtpUA) answer(within time.Duration) error {
	var inv sipMsg
	select {
	case inv = <-u.invites:
	case <-time.After(within):
		return fmt.Errorf("ua %s: no INVITE within %v", u.name, within)
	}
	if err := u.established(inv, false); err != nil {
		return err
	}
	body := u.sdp()
	res := "SIP/2.0 200 OK\r\n"
	for _, v := range inv.hdr["via"] {
		res += "Via: " + v + "\r\n"
	}
	for _, rr := range inv.hdr["record-route"] {
		res += "Record-Route: " + rr + "\r\n"
	}
	res += "From: " + inv.Header("from") + "\r\nTo: " + inv.Header("to") + ";tag=" + u.localTag + "\r\n" +
		"Call-ID: " + inv.CallID() + "\r\nCSeq: " + inv.CSeq() + "\r\n" +
		"Contact: <sip:" + u.name + "@" + u.sipAddr() + ">\r\n" +
		"Content-Type: application/sdp\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	u.send(u.next, res) // 200 retransmissions are not needed on loopback
	u.sending.Store(true)
	return nil
}

// established records the dialog from the caller's 2xx or the callee's INVITE.
func (u *rtpUA) established(m sipMsg, asCaller bool) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	rrs := m.hdr["record-route"]
	u.routes = u.routes[:0]
	if asCaller {
		for i := len(rrs) - 1; i >= 0; i-- {
			u.routes = append(u.routes, rrs[i])
		}
		u.peerTag = tagOf(m.Header("to"))
	} else {
		u.routes = append(u.routes, rrs...)
		u.callID, u.peerTag, u.cseq = m.CallID(), tagOf(m.Header("from")), 0
		u.next = viaHostPort(m.Vias()[0])
	}
	u.target = strings.Trim(m.Header("contact"), "<>")
	if i := strings.Index(u.target, ">"); i >= 0 {
		u.target = u.target[:i]
	}
	ap, err := sdpAddr(m.body)
	if err != nil {
		return fmt.Errorf("ua %s: SDP of %q: %v", u.name, m.First, err)
	}
	u.media = ap
	return nil
}

// ack acknowledges a final response to our INVITE.
func (u *rtpUA) ack(res sipMsg, branch string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.send(u.next, u.request("ACK", 1, branch, res.Header("to")))
}

// hangup sends BYE and waits for its answer.
func (u *rtpUA) hangup() error {
	u.sending.Store(false)
	u.mu.Lock()
	u.cseq++
	req := u.request("BYE", u.cseq, "z9hG4bK"+svcTag(), "")
	next := u.next
	u.mu.Unlock()
	for i := 0; i < 6; i++ {
		u.send(next, req)
		select {
		case m := <-u.finals:
			if strings.HasSuffix(m.CSeq(), "BYE") {
				return nil
			}
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("ua %s: BYE not answered", u.name)
}

// request builds an in-dialog request (u.mu held).
func (u *rtpUA) request(method string, cseq int, branch, to string) string {
	from := "<sip:" + u.aor + ">;tag=" + u.localTag
	if to == "" {
		to = "<sip:peer@127.0.0.1>;tag=" + u.peerTag
	}
	r := method + " " + u.target + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + u.sipAddr() + ";branch=" + branch + ";rport\r\n"
	for _, rt := range u.routes {
		r += "Route: " + rt + "\r\n"
	}
	return r + "From: " + from + "\r\nTo: " + to + "\r\nCall-ID: " + u.callID + "\r\n" +
		"CSeq: " + strconv.Itoa(cseq) + " " + method + "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

// waitBye waits for a BYE from sipedge and returns its Reason header.
func (u *rtpUA) waitBye(within time.Duration) (string, error) {
	select {
	case m := <-u.byes:
		return m.Header("reason"), nil
	case <-time.After(within):
		return "", fmt.Errorf("ua %s: no BYE within %v", u.name, within)
	}
}

// noBye fails if a BYE arrives within d.
func (u *rtpUA) noBye(d time.Duration) error {
	select {
	case m := <-u.byes:
		return fmt.Errorf("ua %s: unexpected BYE (Reason %q)", u.name, m.Header("reason"))
	case <-time.After(d):
		return nil
	}
}

func (u *rtpUA) send(to, msg string) {
	addr, err := net.ResolveUDPAddr("udp", to)
	if err == nil {
		_, _ = u.sip.WriteToUDP([]byte(msg), addr)
	}
}

func (u *rtpUA) readSIP() {
	defer u.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, src, err := u.sip.ReadFromUDP(buf)
		if err != nil {
			return
		}
		raw := string(buf[:n])
		m := parseRaw(raw)
		m.src = src.String()
		if _, body, ok := strings.Cut(raw, "\r\n\r\n"); ok {
			m.body = body
		}
		switch {
		case m.Code >= 200:
			select {
			case u.finals <- m:
			default:
			}
		case m.Method == "INVITE":
			u.mu.Lock()
			u.next = src.String()
			u.mu.Unlock()
			select {
			case u.invites <- m:
			default:
			}
		case m.Method == "BYE":
			u.sending.Store(false)
			u.respond(m, src.String())
			select {
			case u.byes <- m:
			default:
			}
		case m.Method == "ACK":
		case m.Method != "":
			u.respond(m, src.String())
		}
	}
}

// respond answers a request 200 (BYE, OPTIONS, anything else).
func (u *rtpUA) respond(m sipMsg, to string) {
	res := "SIP/2.0 200 OK\r\n"
	for _, v := range m.hdr["via"] {
		res += "Via: " + v + "\r\n"
	}
	res += "From: " + m.Header("from") + "\r\nTo: " + m.Header("to") + "\r\nCall-ID: " + m.CallID() +
		"\r\nCSeq: " + m.CSeq() + "\r\nContent-Length: 0\r\n\r\n"
	u.send(to, res)
}

func (u *rtpUA) readRTP() {
	defer u.wg.Done()
	buf := make([]byte, 2048)
	var h rtp.Header
	for {
		n, err := u.rtp.Read(buf)
		if err != nil {
			return
		}
		if _, err := h.Unmarshal(buf[:n]); err == nil && h.Version == 2 {
			u.received.Add(1)
		}
	}
}

func (u *rtpUA) sendRTP() {
	defer u.wg.Done()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SSRC: uint32(time.Now().UnixNano())},
		Payload: make([]byte, 160)}
	for {
		select {
		case <-u.stop:
			return
		case <-tick.C:
		}
		if !u.sending.Load() {
			continue
		}
		u.mu.Lock()
		dst := u.media
		u.mu.Unlock()
		if !dst.IsValid() || dst.Port() == 0 {
			continue
		}
		pkt.SequenceNumber++
		pkt.Timestamp += 160
		b, _ := pkt.Marshal()
		if _, err := u.rtp.WriteToUDPAddrPort(b, dst); err == nil {
			u.sent.Add(1)
		}
	}
}

// sdpAddr is the first audio stream's address in an SDP body.
func sdpAddr(body string) (netip.AddrPort, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(body); err != nil {
		return netip.AddrPort{}, err
	}
	host := ""
	if sd.ConnectionInformation != nil && sd.ConnectionInformation.Address != nil {
		host = sd.ConnectionInformation.Address.Address
	}
	for _, m := range sd.MediaDescriptions {
		if m.MediaName.Media != "audio" {
			continue
		}
		if m.ConnectionInformation != nil && m.ConnectionInformation.Address != nil {
			host = m.ConnectionInformation.Address.Address
		}
		a, err := netip.ParseAddr(host)
		if err != nil {
			return netip.AddrPort{}, err
		}
		return netip.AddrPortFrom(a, uint16(m.MediaName.Port.Value)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("no audio stream")
}

func tagOf(h string) string {
	_, tag, _ := strings.Cut(h, ";tag=")
	tag, _, _ = strings.Cut(tag, ";")
	return strings.TrimSpace(tag)
}
