package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
)

// callConfig is what `rtpload call` is told.
type callConfig struct {
	Proxy     string        // host:port of the proxy under test
	Local     string        // SIP address of the caller
	Calls     int           // concurrent calls set up before any RTP
	Rates     []int         // RTP packets/s sent by the caller, over all calls, one step each
	Step      time.Duration // duration of one RTP step
	Pids      []int         // processes of the relay (CPU, PSS, socket memory)
	MaxP99    time.Duration // a step passes with p99 round trip at or below this
	MaxLoss   float64       // and loss below this (percent)
	SetupWait time.Duration // bound on setting up all calls
}

// leg is one call's caller side: its RTP socket and where to send.
type leg struct {
	sess   *sipgo.DialogClientSession
	conn   *net.UDPConn
	dst    netip.AddrPort
	ssrc   uint32
	seq    uint16
	ts     uint32
	rttsMu sync.Mutex
	rtts   []time.Duration
	recv   atomic.Uint64
}

// epoch is the clock the send times in the payload count from.
var epoch = time.Now()

func runCall(ctx context.Context, cfg callConfig) error {
	la, err := netip.ParseAddrPort(cfg.Local)
	if err != nil {
		return fmt.Errorf("call --local %q: %w", cfg.Local, err)
	}
	pa, err := netip.ParseAddrPort(cfg.Proxy)
	if err != nil {
		return fmt.Errorf("call --proxy %q: %w", cfg.Proxy, err)
	}
	pids := map[int]bool{}
	for _, p := range cfg.Pids {
		pids[p] = true
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("rtpload"),
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
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	ready := make(chan struct{})
	go func() {
		_ = srv.ListenAndServe(sctx, "udp", cfg.Local)
	}()
	// sipgo's listener has no ready signal: wait for the socket.
	go func() {
		for i := 0; i < 100; i++ {
			out, _ := exec.Command("ss", "-Hlnu", "sport = :"+strconv.Itoa(int(la.Port()))).Output()
			if len(bytes.TrimSpace(out)) > 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		close(ready)
	}()
	<-ready
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(la.Addr().String()), sipgo.WithClientPort(int(la.Port())),
		sipgo.WithClientLogger(quietLog))
	if err != nil {
		return err
	}
	dua := &sipgo.DialogUA{Client: client, ContactHDR: sip.ContactHeader{
		Address: sip.Uri{Scheme: "sip", User: "rtpload", Host: la.Addr().String(), Port: int(la.Port())}}}

	pssBefore, err := procPssKB(cfg.Pids)
	if err != nil {
		return fmt.Errorf("relay PSS: %w", err)
	}
	skBefore, _ := socketBytes(pids)

	legs, err := setUp(ctx, dua, la.Addr(), pa, cfg)
	defer tearDown(legs)
	if err != nil {
		return err
	}
	time.Sleep(time.Second) // let the relay settle its per-call state
	pssAfter, err := procPssKB(cfg.Pids)
	if err != nil {
		return fmt.Errorf("relay PSS: %w", err)
	}
	skIdle, _ := socketBytes(pids)
	fmt.Printf("setup calls=%d pss_before_kb=%d pss_after_kb=%d pss_per_call_kb=%.2f sock_idle_per_call_b=%.0f\n",
		len(legs), pssBefore, pssAfter, float64(int64(pssAfter)-int64(pssBefore))/float64(len(legs)),
		float64(int64(skIdle)-int64(skBefore))/float64(len(legs)))

	for _, l := range legs {
		go receive(l)
	}
	for _, rate := range cfg.Rates {
		if err := step(ctx, legs, rate, cfg, pids, pssBefore, skBefore); err != nil {
			return err
		}
	}
	return nil
}

// setUp places cfg.Calls calls through the proxy, each with its own RTP
// socket in the offer, and returns them once all are answered and ACKed.
func setUp(ctx context.Context, dua *sipgo.DialogUA, ip netip.Addr, proxy netip.AddrPort, cfg callConfig) ([]*leg, error) {
	sctx, cancel := context.WithTimeout(ctx, cfg.SetupWait)
	defer cancel()
	legs := make([]*leg, cfg.Calls)
	errs := make(chan error, cfg.Calls)
	sem := make(chan struct{}, 50) // INVITEs in flight
	var wg sync.WaitGroup
	for i := range legs {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip.AsSlice()})
		if err != nil {
			return legs[:i], fmt.Errorf("RTP socket: %w", err)
		}
		_ = conn.SetReadBuffer(1 << 20)
		legs[i] = &leg{conn: conn, ssrc: uint32(0x5000 + i)}
		wg.Add(1)
		go func(i int, l *leg) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			uri := sip.Uri{Scheme: "sip", User: fmt.Sprintf("rtp%d", i), Host: proxy.Addr().String(), Port: int(proxy.Port())}
			port := l.conn.LocalAddr().(*net.UDPAddr).Port
			sess, err := dua.Invite(sctx, uri, sdpBody("rtpload", ip, port), sip.NewHeader("Content-Type", "application/sdp"))
			if err != nil {
				errs <- fmt.Errorf("call %d INVITE: %w", i, err)
				return
			}
			l.sess = sess
			if err := sess.WaitAnswer(sctx, sipgo.AnswerOptions{}); err != nil {
				errs <- fmt.Errorf("call %d answer: %w", i, err)
				return
			}
			dst, err := sdpMedia(sess.InviteResponse.Body())
			if err != nil {
				errs <- fmt.Errorf("call %d SDP answer: %w", i, err)
				return
			}
			l.dst = dst
			if err := sess.Ack(sctx); err != nil {
				errs <- fmt.Errorf("call %d ACK: %w", i, err)
			}
		}(i, legs[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return legs, err // the first is enough: every call must be up
	}
	return legs, nil
}

func tearDown(legs []*leg) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for _, l := range legs {
		if l == nil {
			continue
		}
		if l.sess != nil {
			wg.Add(1)
			go func(l *leg) {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = l.sess.Bye(ctx)
				l.sess.Close()
			}(l)
		}
	}
	wg.Wait()
	for _, l := range legs {
		if l != nil {
			l.conn.Close()
		}
	}
}

// receive records the round trip of every echoed packet of one leg.
func receive(l *leg) {
	buf := make([]byte, 2048)
	var p rtp.Packet
	for {
		k, err := l.conn.Read(buf)
		if err != nil {
			return
		}
		now := time.Since(epoch)
		if p.Unmarshal(buf[:k]) != nil || len(p.Payload) < 8 {
			continue
		}
		sent := time.Duration(binary.BigEndian.Uint64(p.Payload))
		l.recv.Add(1)
		l.rttsMu.Lock()
		l.rtts = append(l.rtts, now-sent)
		l.rttsMu.Unlock()
	}
}

// step sends rate packets/s round robin over the legs for cfg.Step and
// prints what came back and what the relay spent.
func step(ctx context.Context, legs []*leg, rate int, cfg callConfig, pids map[int]bool, pssBefore, skBefore uint64) error {
	for _, l := range legs {
		l.rttsMu.Lock()
		l.rtts = l.rtts[:0]
		l.rttsMu.Unlock()
		l.recv.Store(0)
	}
	t0, err := procTicks(cfg.Pids)
	if err != nil {
		return fmt.Errorf("relay CPU: %w", err)
	}
	w0 := time.Now()
	var sent uint64
	var skMid uint64
	sampled := false
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0}, Payload: make([]byte, 160)}
	buf := make([]byte, 0, 256)
	next := 0
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		el := time.Since(w0)
		if el >= cfg.Step {
			break
		}
		if !sampled && el >= cfg.Step/2 {
			skMid, _ = socketBytes(pids)
			sampled = true
		}
		due := uint64(el.Seconds() * float64(rate))
		for sent < due {
			l := legs[next]
			next = (next + 1) % len(legs)
			l.seq++
			l.ts += 160
			pkt.SequenceNumber, pkt.Timestamp, pkt.SSRC = l.seq, l.ts, l.ssrc
			binary.BigEndian.PutUint64(pkt.Payload, uint64(time.Since(epoch)))
			b, err := pkt.MarshalTo(buf[:cap(buf)])
			if err == nil {
				_, _ = l.conn.WriteToUDPAddrPort(buf[:b], l.dst)
			}
			sent++
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	wall := time.Since(w0)
	t1, err := procTicks(cfg.Pids)
	if err != nil {
		return fmt.Errorf("relay CPU: %w", err)
	}
	time.Sleep(300 * time.Millisecond) // the last echoes
	var recv uint64
	var rtts []time.Duration
	for _, l := range legs {
		recv += l.recv.Load()
		l.rttsMu.Lock()
		rtts = append(rtts, l.rtts...)
		l.rttsMu.Unlock()
	}
	pss, _ := procPssKB(cfg.Pids)
	p50 := percentile(rtts, 50)
	p99 := percentile(rtts, 99)
	loss := lossPercent(sent, recv)
	relayed := sent + recv // packets the relay forwarded: each way once (see README)
	cpuUS := float64(t1-t0) / float64(clkTck) * 1e6
	perPkt := 0.0
	if relayed > 0 {
		perPkt = cpuUS / float64(relayed)
	}
	memPerCall := (float64(int64(pss)-int64(pssBefore))*1024 + float64(int64(skMid)-int64(skBefore))) / float64(len(legs))
	pass := p99 <= cfg.MaxP99 && loss < cfg.MaxLoss
	fmt.Printf("step rate=%d seconds=%.2f sent=%d received=%d loss_pct=%.3f relayed_pps=%.0f p50_rtt_ms=%.3f p99_rtt_ms=%.3f "+
		"cpu_pct=%.1f cpu_us_per_pkt=%.3f pss_kb=%d sock_b=%d mem_per_call_kb=%.2f pass=%v\n",
		rate, wall.Seconds(), sent, recv, loss, float64(relayed)/wall.Seconds(), ms(p50), ms(p99),
		100*cpuUS/1e6/wall.Seconds(), perPkt, pss, skMid, memPerCall/1024, pass)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// clkTck is USER_HZ: 100 on every Linux the project runs on.
const clkTck = 100

// socketBytes sums the kernel memory of the UDP sockets of pids (ss -uamp).
func socketBytes(pids map[int]bool) (uint64, error) {
	out, err := exec.Command("ss", "-uampH").Output()
	if err != nil {
		return 0, err
	}
	b, _ := parseSkmem(out, pids)
	return b, nil
}

// sdpMedia returns the address of the first audio stream of an SDP body:
// the session (or media) c= address and the m=audio port.
func sdpMedia(body []byte) (netip.AddrPort, error) {
	var addr netip.Addr
	port := -1
	inAudio := false
	for _, line := range strings.Split(string(body), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "m="):
			if port >= 0 {
				inAudio = false
				continue
			}
			f := strings.Fields(line[2:])
			inAudio = len(f) >= 2 && f[0] == "audio"
			if inAudio {
				p, err := strconv.Atoi(f[1])
				if err != nil || p <= 0 || p > 65535 {
					return netip.AddrPort{}, fmt.Errorf("bad m= port %q", line)
				}
				port = p
			}
		case strings.HasPrefix(line, "c="):
			if port >= 0 && !inAudio {
				continue
			}
			f := strings.Fields(line[2:])
			if len(f) < 3 {
				return netip.AddrPort{}, fmt.Errorf("bad c= line %q", line)
			}
			a, err := netip.ParseAddr(f[2])
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("c= address %q: %w", f[2], err)
			}
			addr = a
		}
	}
	if port < 0 || !addr.IsValid() {
		return netip.AddrPort{}, fmt.Errorf("no audio stream with an address")
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
