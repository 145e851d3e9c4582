// Package config loads sipedge's configuration: defaults, then the YAML file,
// then SIPEDGE_* environment variables, then command-line flags. Every field
// is validated and a bad value stops start-up with an error naming the field.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/rs/zerolog"
)

// Config is the whole sipedge configuration. Tags: yaml key (also the flag
// name with '_' → '-', and the env var SIPEDGE_<KEY>), and the flag usage.
type Config struct {
	Name   string `yaml:"name" usage:"instance name (default hostname)"`
	Site   string `yaml:"site" usage:"site this instance belongs to"`
	Server string `yaml:"server" usage:"server name used by deservice profiles (default hostname)"`
	Listen string `yaml:"listen" usage:"SIP listen HOST:PORT (UDP and TCP); a comma-separated list listens on each (IPv4 and IPv6; addresses after the first must be IPs); an entry HOST:PORT advertise HOST[:PORT] gives the name Via and Record-Route use for that address"`
	// Secure and web transports for endpoints; empty turns each off.
	TLSListen  string `yaml:"tls_listen" usage:"SIP over TLS listen HOST:PORT, or a comma-separated list, entries as in listen (empty: off; needs tls_cert and tls_key)"`
	WSListen   string `yaml:"ws_listen" usage:"SIP over WebSocket listen HOST:PORT, or a comma-separated list, entries as in listen (empty: off)"`
	WSSListen  string `yaml:"wss_listen" usage:"SIP over secure WebSocket listen HOST:PORT, or a comma-separated list, entries as in listen (empty: off; needs tls_cert and tls_key)"`
	TLSCert    string `yaml:"tls_cert" usage:"PEM certificate (chain) file of the TLS and WSS listeners, read again on SIGHUP"`
	TLSKey     string `yaml:"tls_key" usage:"PEM private key file of tls_cert"`
	UDPBuffer  int    `yaml:"udp_buffer" usage:"UDP socket buffer bytes (capped by net.core.rmem_max/wmem_max)"`
	Advertise  string `yaml:"advertise" usage:"HOST[:PORT] written into Via and Record-Route for the first listen address (default: that address; the others: see listen)"`
	Redis      string `yaml:"redis" usage:"Redis address; empty starts an embedded Redis on loopback"`
	Prefix     string `yaml:"prefix" usage:"Redis key prefix"`
	Admin      string `yaml:"admin" usage:"admin HTTP HOST:PORT (metrics, health, status)"`
	LogFormat  string `yaml:"log_format" usage:"log format: json or console"`
	LogLevel   string `yaml:"log_level" usage:"log level: debug, info, warn, error"`
	RouteKey   string `yaml:"route_secret" usage:"secret signing Record-Route state (default: shared random key kept in Redis)"`
	RetryAfter int    `yaml:"retry_after" usage:"Retry-After seconds on 503 answers (default of sipedge:settings retry_after)"`
	// DeserviceAnswer is what a deserviced instance answers new dialogs:
	// 503 + Retry-After, or 302 to the least-loaded normal instance of its site.
	DeserviceAnswer string `yaml:"deservice_answer" usage:"answer of a deserviced instance to new dialogs: 503 (Retry-After) or 302 (to the least-loaded normal instance of its site)"`

	RouteKeyPrev   string        `yaml:"route_secret_prev" usage:"previous route secret: its Record-Routes still route, none is made with it (rotation of a configured route_secret)"`
	NodeSecret     string        `yaml:"node_secret" usage:"key media nodes sign X-Sipedge-Auth with (default: shared random key kept in Redis as <prefix>node_secret)"`
	NodeSecretPrev string        `yaml:"node_secret_prev" usage:"previous node secret, still accepted (rotation of a configured node_secret)"`
	NodeAuthWindow time.Duration `yaml:"node_auth_window" usage:"how far the timestamp of a node's X-Sipedge-Auth may be from this clock"`

	DrainTimeout time.Duration `yaml:"drain_timeout" usage:"a node drain still holding calls after this ends them (0 = never; default of sipedge:settings drain_timeout)"`
	DrainAction  string        `yaml:"drain_action" usage:"at drain timeout: bye (end the calls) or keep"`
	SlowStart    time.Duration `yaml:"slow_start" usage:"a returning node's weight ramps from 0 to full over this (default of sipedge:settings slow_start)"`

	ProbeInterval    time.Duration `yaml:"probe_interval" usage:"SIP OPTIONS probe interval per node (0 disables probing)"`
	ProbeTimeout     time.Duration `yaml:"probe_timeout" usage:"timeout of one OPTIONS probe"`
	ProbeDown        int           `yaml:"probe_down" usage:"consecutive failed probes before a node is down"`
	ProbeUp          int           `yaml:"probe_up" usage:"consecutive good probes before a down node is up again"`
	FailoverAttempts int           `yaml:"failover_attempts" usage:"other nodes a new call is retried on when its node is silent, unreachable or answers 408/5xx (0 = no failover)"`
	FailoverTimeout  time.Duration `yaml:"failover_timeout" usage:"a new call's node that gives no response other than 100 within this is failed over"`
	SuspectHold      time.Duration `yaml:"suspect_hold" usage:"a node that failed a call stays out of the ring this long unless a good probe clears it first"`
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout" usage:"a node or instance heartbeat older than this is stale"`
	ResyncInterval   time.Duration `yaml:"resync_interval" usage:"full reload of Redis state (bounds how late a plain redis-cli change applies)"`
	CountsWindow     time.Duration `yaml:"counts_window" usage:"dialog counts and new placements are written to Redis this long after the first change, all changes of the window in one write (0 = each change at once); a conference that stays in progress here waits for the beat"`
	ConfTTL          time.Duration `yaml:"conf_ttl" usage:"expiry of a conference placement key (safety net when BYEs are lost)"`
	RedisTimeout     time.Duration `yaml:"redis_timeout" usage:"timeout of one Redis call on the SIP path"`
	StartupRetry     time.Duration `yaml:"startup_retry" usage:"how long to retry an unreachable Redis at start-up before giving up"`
	EmptyRingGrace   time.Duration `yaml:"empty_ring_grace" usage:"a node set found empty (Redis restarted empty) keeps the last known ring this long, until nodes register again (0: empty at once)"`

	MediaPorts      string `yaml:"media_ports" usage:"RTP relay port range MIN-MAX (MIN even); empty turns media anchoring off"`
	MediaIP         string `yaml:"media_ip" usage:"IP the relay ports bind to (default: the listen host)"`
	MediaAdvertise  string `yaml:"media_advertise" usage:"IP written into rewritten SDP (default: the advertised SIP host)"`
	TrustedNetworks string `yaml:"trusted_networks" usage:"comma-separated CIDRs whose X-Sipedge-* headers are honoured (media nodes always are)"`

	MediaTimeout           time.Duration `yaml:"media_timeout" usage:"a participant whose RTP is silent this long is ended (default of sipedge:settings media_timeout)"`
	PresenceTimeout        time.Duration `yaml:"presence_timeout" usage:"a participant silent this long is no longer present (keeps no conference alive)"`
	GuestsOnlyTimeout      time.Duration `yaml:"guests_only_timeout" usage:"conference end after the last Host keeping it alive left (default of sipedge:settings)"`
	LastParticipantTimeout time.Duration `yaml:"last_participant_timeout" usage:"conference end while one participant remains (0 = never; default of sipedge:settings)"`

	ShutdownGrace time.Duration `yaml:"shutdown_grace" usage:"on SIGTERM, how long to wait for this instance's dialogs to end before exiting (0 = exit at once)"`

	// Flood limits (README "Floods and exhaustion").
	SourceRate      int `yaml:"source_rate" usage:"new dialogs a second one source IP may start before 503 (0 turns per-source limits off; media nodes and trusted_networks are exempt)"`
	SourceBurst     int `yaml:"source_burst" usage:"new dialogs one source IP may start at once (0 = source_rate)"`
	SourceDropRate  int `yaml:"source_drop_rate" usage:"INVITEs a second from one source IP above which they are dropped unanswered (0 = 5 x source_rate)"`
	SourcePorts     int `yaml:"source_ports" usage:"relay ports the calls of one source IP may hold before 503 (0 = no cap)"`
	SourceHalfOpen  int `yaml:"source_halfopen" usage:"half-open INVITE dialogs (unanswered, or 2xx not ACKed) one source IP may hold before 503 (0 = no cap)"`
	MaxDialogs      int `yaml:"max_dialogs" usage:"dialogs held by this instance above which new dialogs get 503 (0 = no limit)"`
	MaxHalfOpen     int `yaml:"max_halfopen" usage:"half-open INVITE dialogs on this instance above which new ones get 503 (0 = no limit)"`
	MaxPortsPercent int `yaml:"max_ports_percent" usage:"relay ports in use, in percent of media_ports, above which new calls get 503 (0 = no limit)"`
	MaxMemoryMB     int `yaml:"max_memory_mb" usage:"memory MiB the Go runtime holds (less what it returned to the OS) above which new dialogs get 503 (0 = no limit)"`

	// Garbage collector pacing (internal/app/gc.go); the GOGC and GOMEMLIMIT
	// environment variables win over them.
	GOGC          int `yaml:"gogc" usage:"GC target percent: heap growth over the live heap before a collection (-1 = only memory_limit_mb triggers one; the GOGC env var wins)"`
	MemoryLimitMB int `yaml:"memory_limit_mb" usage:"soft memory limit MiB: the GC runs harder as the process nears it (0 = three quarters of max_memory_mb, -1 = none; the GOMEMLIMIT env var wins)"`

	MaxMessageSize       int           `yaml:"max_message_size" usage:"largest SIP message in bytes (requests above get 513, responses above are dropped); at most 65507"`
	TCPHeaderTimeout     time.Duration `yaml:"tcp_header_timeout" usage:"a TCP message must arrive whole within this of its first byte (0 = no limit)"`
	TCPIdleTimeout       time.Duration `yaml:"tcp_idle_timeout" usage:"a TCP connection with no traffic either way this long is closed (0 = never)"`
	WSFrameTimeout       time.Duration `yaml:"ws_frame_timeout" usage:"a WebSocket frame, and a SIP message over WS/WSS, must arrive whole within this of its first byte (0 = no limit)"`
	TCPMaxConnsPerSource int           `yaml:"tcp_max_conns_per_source" usage:"open TCP, TLS and WebSocket connections one source IP may hold, all listeners together (0 = no limit)"`
	DNSLookups           string        `yaml:"dns_lookups" usage:"off: never send a DNS query (host names in messages are not resolved); on: resolve host names"`

	// TLS toward nodes whose record says transport tls (internal/app/nodetls.go).
	NodeTLSCA     string `yaml:"node_tls_ca" usage:"PEM CA file that nodes' TLS certificates are verified against (empty: the system roots)"`
	NodeTLSVerify string `yaml:"node_tls_verify" usage:"on: verify nodes' TLS certificates (name or IP of the node address); off: accept any (tests only)"`

	// AdminPprof serves Go's profiler on the admin listener, for profiling
	// under load (make bench-compare PPROF_DIR=...).
	AdminPprof string `yaml:"admin_pprof" usage:"on: serve /debug/pprof on the admin listener (keep the admin address private); off: not served"`
}

// Default returns the configuration used when nothing overrides it.
func Default() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "sipedge"
	}
	return Config{
		Name:             host,
		Site:             "default",
		Server:           host,
		Listen:           "0.0.0.0:5060",
		UDPBuffer:        4 << 20,
		Prefix:           "sipedge:",
		Admin:            "127.0.0.1:9060",
		LogFormat:        "json",
		LogLevel:         "info",
		RetryAfter:       30,
		DeserviceAnswer:  "503",
		DrainTimeout:     7200 * time.Second,
		DrainAction:      "bye",
		SlowStart:        60 * time.Second,
		ProbeInterval:    2 * time.Second,
		ProbeTimeout:     time.Second,
		ProbeDown:        3,
		ProbeUp:          2,
		FailoverAttempts: 2,
		FailoverTimeout:  2 * time.Second,
		SuspectHold:      10 * time.Second,
		HeartbeatTimeout: 5 * time.Second,
		ResyncInterval:   500 * time.Millisecond,
		CountsWindow:     50 * time.Millisecond,
		ConfTTL:          24 * time.Hour,
		RedisTimeout:     250 * time.Millisecond,
		StartupRetry:     10 * time.Second,
		EmptyRingGrace:   30 * time.Second,

		NodeAuthWindow: 30 * time.Second,

		MediaPorts:        "30000-39999",
		MediaTimeout:      60 * time.Second,
		PresenceTimeout:   5 * time.Second,
		GuestsOnlyTimeout: 60 * time.Second,
		ShutdownGrace:     30 * time.Second,

		SourceRate:      100,
		SourceBurst:     200,
		SourcePorts:     2000,
		SourceHalfOpen:  100,
		MaxDialogs:      100000,
		MaxHalfOpen:     10000,
		MaxPortsPercent: 95,
		MaxMemoryMB:     2048,
		GOGC:            GCDefault,
		MemoryLimitMB:   MemoryLimitDefault,

		MaxMessageSize:       65507,
		TCPHeaderTimeout:     10 * time.Second,
		TCPIdleTimeout:       120 * time.Second,
		WSFrameTimeout:       5 * time.Second,
		TCPMaxConnsPerSource: 64,
		DNSLookups:           "off",
		NodeTLSVerify:        "on",
		AdminPprof:           "off",
	}
}

// FieldError names the configuration field that holds a bad value.
type FieldError struct {
	Field string
	Value string
	Err   error
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("config field %q: %q: %v", e.Field, e.Value, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

var (
	errNotHostPort = errors.New("must be HOST:PORT")
	errOneOf       = errors.New("unknown value")
	errRange       = errors.New("out of range")
	errEmpty       = errors.New("must not be empty")
)

// Validate checks every field and returns the first bad one.
func (c Config) Validate() error {
	checks := []struct {
		field string
		value string
		err   error
	}{
		{"name", c.Name, nonEmpty(c.Name)},
		{"site", c.Site, nonEmpty(c.Site)},
		{"server", c.Server, nonEmpty(c.Server)},
		{"advertise", c.Advertise, advertise(c.Advertise)},
		{"udp_buffer", strconv.Itoa(c.UDPBuffer), intRange(c.UDPBuffer, 0, 1<<30)},
		{"redis", c.Redis, optionalHostPort(c.Redis)},
		{"prefix", c.Prefix, nonEmpty(c.Prefix)},
		{"admin", c.Admin, optionalHostPort(c.Admin)},
		{"log_format", c.LogFormat, oneOf(c.LogFormat, "json", "console")},
		{"log_level", c.LogLevel, logLevel(c.LogLevel)},
		{"retry_after", strconv.Itoa(c.RetryAfter), intRange(c.RetryAfter, 0, 86400)},
		{"deservice_answer", c.DeserviceAnswer, oneOf(c.DeserviceAnswer, "503", "302")},
		{"drain_timeout", c.DrainTimeout.String(), durRange(c.DrainTimeout, 0, 7*24*time.Hour)},
		{"drain_action", c.DrainAction, oneOf(c.DrainAction, "bye", "keep")},
		{"slow_start", c.SlowStart.String(), durRange(c.SlowStart, 0, time.Hour)},
		{"probe_interval", c.ProbeInterval.String(), durRange(c.ProbeInterval, 0, time.Hour)},
		{"probe_timeout", c.ProbeTimeout.String(), durRange(c.ProbeTimeout, time.Millisecond, time.Minute)},
		{"probe_down", strconv.Itoa(c.ProbeDown), intRange(c.ProbeDown, 1, 100)},
		{"probe_up", strconv.Itoa(c.ProbeUp), intRange(c.ProbeUp, 1, 100)},
		{"failover_attempts", strconv.Itoa(c.FailoverAttempts), intRange(c.FailoverAttempts, 0, 10)},
		// Below Timer B (32 s): past it the transaction gives up by itself.
		{"failover_timeout", c.FailoverTimeout.String(), durRange(c.FailoverTimeout, 100*time.Millisecond, 30*time.Second)},
		{"suspect_hold", c.SuspectHold.String(), durRange(c.SuspectHold, time.Second, time.Hour)},
		{"heartbeat_timeout", c.HeartbeatTimeout.String(), durRange(c.HeartbeatTimeout, 100*time.Millisecond, time.Hour)},
		{"resync_interval", c.ResyncInterval.String(), durRange(c.ResyncInterval, 10*time.Millisecond, time.Hour)},
		{"counts_window", c.CountsWindow.String(), durRange(c.CountsWindow, 0, time.Second)},
		{"conf_ttl", c.ConfTTL.String(), durRange(c.ConfTTL, time.Second, 30*24*time.Hour)},
		{"redis_timeout", c.RedisTimeout.String(), durRange(c.RedisTimeout, time.Millisecond, time.Minute)},
		{"startup_retry", c.StartupRetry.String(), durRange(c.StartupRetry, 0, time.Hour)},
		{"empty_ring_grace", c.EmptyRingGrace.String(), durRange(c.EmptyRingGrace, 0, time.Hour)},
		{"media_ports", c.MediaPorts, portRange(c.MediaPorts)},
		{"media_ip", c.MediaIP, optionalIP(c.MediaIP)},
		{"media_advertise", c.MediaAdvertise, optionalIP(c.MediaAdvertise)},
		{"trusted_networks", c.TrustedNetworks, cidrList(c.TrustedNetworks)},
		{"route_secret_prev", hidden(c.RouteKeyPrev), previousSecret(c.RouteKeyPrev, c.RouteKey)},
		{"node_secret_prev", hidden(c.NodeSecretPrev), previousSecret(c.NodeSecretPrev, c.NodeSecret)},
		{"node_auth_window", c.NodeAuthWindow.String(), durRange(c.NodeAuthWindow, time.Second, 10*time.Minute)},
		{"media_timeout", c.MediaTimeout.String(), durRange(c.MediaTimeout, time.Second, 86400*time.Second)},
		{"presence_timeout", c.PresenceTimeout.String(), durRange(c.PresenceTimeout, 100*time.Millisecond, time.Hour)},
		{"guests_only_timeout", c.GuestsOnlyTimeout.String(), durRange(c.GuestsOnlyTimeout, 0, 86400*time.Second)},
		{"last_participant_timeout", c.LastParticipantTimeout.String(), backstop(c.LastParticipantTimeout)},
		{"shutdown_grace", c.ShutdownGrace.String(), durRange(c.ShutdownGrace, 0, 24*time.Hour)},
		{"source_rate", strconv.Itoa(c.SourceRate), intRange(c.SourceRate, 0, 1000000)},
		{"source_burst", strconv.Itoa(c.SourceBurst), intRange(c.SourceBurst, 0, 1000000)},
		{"source_drop_rate", strconv.Itoa(c.SourceDropRate), dropRate(c.SourceDropRate, c.SourceRate)},
		{"source_ports", strconv.Itoa(c.SourcePorts), intRange(c.SourcePorts, 0, 65536)},
		{"source_halfopen", strconv.Itoa(c.SourceHalfOpen), intRange(c.SourceHalfOpen, 0, 1000000)},
		{"max_dialogs", strconv.Itoa(c.MaxDialogs), intRange(c.MaxDialogs, 0, 10000000)},
		{"max_halfopen", strconv.Itoa(c.MaxHalfOpen), intRange(c.MaxHalfOpen, 0, 10000000)},
		{"max_ports_percent", strconv.Itoa(c.MaxPortsPercent), intRange(c.MaxPortsPercent, 0, 100)},
		{"max_memory_mb", strconv.Itoa(c.MaxMemoryMB), intRange(c.MaxMemoryMB, 0, 1<<20)},
		{"gogc", strconv.Itoa(c.GOGC), gogc(c.GOGC, c)},
		{"memory_limit_mb", strconv.Itoa(c.MemoryLimitMB), intRange(c.MemoryLimitMB, -1, 1<<20)},

		{"max_message_size", strconv.Itoa(c.MaxMessageSize), intRange(c.MaxMessageSize, 1500, 65507)},
		{"tcp_header_timeout", c.TCPHeaderTimeout.String(), durRange(c.TCPHeaderTimeout, 0, time.Hour)},
		{"tcp_idle_timeout", c.TCPIdleTimeout.String(), durRange(c.TCPIdleTimeout, 0, 24*time.Hour)},
		{"ws_frame_timeout", c.WSFrameTimeout.String(), durRange(c.WSFrameTimeout, 0, time.Hour)},
		{"tcp_max_conns_per_source", strconv.Itoa(c.TCPMaxConnsPerSource), intRange(c.TCPMaxConnsPerSource, 0, 1<<20)},
		{"dns_lookups", c.DNSLookups, oneOf(c.DNSLookups, "off", "on")},
		{"node_tls_verify", c.NodeTLSVerify, oneOf(c.NodeTLSVerify, "on", "off")},
		{"admin_pprof", c.AdminPprof, oneOf(c.AdminPprof, "off", "on")},
		{"node_tls_ca", c.NodeTLSCA, readableFile(c.NodeTLSCA)},
	}
	if err := c.validateListen(); err != nil { // every entry of listen (listen.go)
		return err
	}
	for _, ch := range checks {
		if ch.err != nil {
			return &FieldError{Field: ch.field, Value: ch.value, Err: ch.err}
		}
	}
	return c.validateSecure()
}

var errNeedsCert = errors.New("needs tls_cert and tls_key")

// validateSecure checks the TLS/WS listeners and that a certificate is
// configured for the ones that need it (the files are read at start).
func (c Config) validateSecure() error {
	if err := c.validateStreamListens(); err != nil { // every entry (listen.go)
		return err
	}
	if (c.TLSListen != "" || c.WSSListen != "") && (c.TLSCert == "" || c.TLSKey == "") {
		field, value := "tls_listen", c.TLSListen
		if c.TLSListen == "" {
			field, value = "wss_listen", c.WSSListen
		}
		return &FieldError{Field: field, Value: value, Err: errNeedsCert}
	}
	return nil
}

func nonEmpty(s string) error {
	if s == "" {
		return errEmpty
	}
	return nil
}

func hostPort(s string, needPort bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errNotHostPort
	}
	if host == "" && !needPort {
		return errNotHostPort
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%w: bad port", errNotHostPort)
	}
	return nil
}

func optionalHostPort(s string) error {
	if s == "" {
		return nil
	}
	return hostPort(s, true)
}

// advertise accepts HOST or HOST:PORT.
func advertise(s string) error {
	if s == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return hostPort(s, true)
	}
	if net.ParseIP(s) == nil && len(s) > 253 {
		return errNotHostPort
	}
	return nil
}

func oneOf(s string, allowed ...string) error {
	for _, a := range allowed {
		if s == a {
			return nil
		}
	}
	return fmt.Errorf("%w (want one of %v)", errOneOf, allowed)
}

func logLevel(s string) error {
	if _, err := zerolog.ParseLevel(s); err != nil || s == "" {
		return fmt.Errorf("%w (want debug, info, warn or error)", errOneOf)
	}
	return nil
}

func intRange(v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%w: want %d..%d", errRange, lo, hi)
	}
	return nil
}

func durRange(v, lo, hi time.Duration) error {
	if v < lo || v > hi {
		return fmt.Errorf("%w: want %s..%s", errRange, lo, hi)
	}
	return nil
}

// dropRate checks source_drop_rate: the hard threshold lies at or above
// the rate that is answered 503 (0 picks 5 x source_rate).
func dropRate(v, rate int) error {
	if err := intRange(v, 0, 10000000); err != nil {
		return err
	}
	if v > 0 && v < rate {
		return fmt.Errorf("%w: below source_rate %d", errRange, rate)
	}
	return nil
}
