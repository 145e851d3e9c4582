// Package rawtcp dials the TCP connections sipedge keeps to Redis so that
// their reads and writes do not enter the Go runtime's syscall state.
//
// Why: the runtime's monitor thread (sysmon) sleeps while the process is
// idle, and the first ordinary syscall after that wakes it (a futex wake
// and a thread switch on the proxy's core) and restarts its 20 µs polling
// loop. Below the top call rate the proxy is idle between most messages,
// and each call set-up makes one Redis round trip (the sticky placement),
// whose write, reads and pool health check did exactly that: at 250
// calls/s sysmon woke about 1500 times a second and took about a sixth of
// the proxy's CPU. The SIP listener's datagrams take the same way out
// (proxy/rawudp_linux.go), and so does the relay (media/relay).
//
// Conn keeps net's deadlines, close and readiness wait (syscall.RawConn);
// only the read(2) and send(2) inside are raw.
package rawtcp
