package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

var (
	errListenExtraIP  = errors.New("a listen address after the first must be an IP address (not a wildcard or a name): it is written into Via and Record-Route as it is")
	errListenTwice    = errors.New("listed twice")
	errListenAdvEmpty = errors.New("empty entry")
	errListenEntry    = errors.New("want HOST:PORT or, as Kamailio writes it, HOST:PORT advertise HOST[:PORT]")
	errAdvertiseTwice = errors.New("the first listen entry has its own advertise: set one of them")
)

// A ListenEntry is one entry of listen, tls_listen, ws_listen or
// wss_listen: HOST:PORT, or HOST:PORT advertise HOST[:PORT] (Kamailio's
// `listen=udp:IP:PORT advertise HOST:PORT`): the address bound and the
// name Via and Record-Route give it.
type ListenEntry struct {
	Addr      string
	Advertise string // "": derived from the address
}

// parseListenEntry reads one entry; ok is false on a malformed one.
func parseListenEntry(s string) (ListenEntry, bool) {
	f := strings.Fields(s)
	switch {
	case len(f) == 1:
		return ListenEntry{Addr: f[0]}, true
	case len(f) == 3 && strings.EqualFold(f[1], "advertise"):
		return ListenEntry{Addr: f[0], Advertise: f[2]}, true
	}
	return ListenEntry{Addr: strings.TrimSpace(s)}, false
}

// listEntries splits a comma-separated list of entries ("" is none).
func listEntries(list string) []ListenEntry {
	if strings.TrimSpace(list) == "" {
		return nil
	}
	parts := strings.Split(list, ",")
	out := make([]ListenEntry, 0, len(parts))
	for _, s := range parts {
		e, _ := parseListenEntry(s)
		out = append(out, e)
	}
	return out
}

// ListenEntries are the entries of listen: the first is the main one
// (advertise applies to it), the others each get UDP and TCP too.
func (c Config) ListenEntries() []ListenEntry {
	if e := listEntries(c.Listen); len(e) > 0 {
		return e
	}
	return []ListenEntry{{}}
}

// TLSListens, WSListens and WSSListens are the entries of tls_listen,
// ws_listen and wss_listen (none: that transport is off).
func (c Config) TLSListens() []ListenEntry { return listEntries(c.TLSListen) }
func (c Config) WSListens() []ListenEntry  { return listEntries(c.WSListen) }
func (c Config) WSSListens() []ListenEntry { return listEntries(c.WSSListen) }

// ListenAddrs are the addresses of listen, without their advertise.
func (c Config) ListenAddrs() []string {
	entries := c.ListenEntries()
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Addr)
	}
	return out
}

// FirstAdvertise is what the first listen address is named by: advertise,
// else the first entry's own advertise ("": its address).
func (c Config) FirstAdvertise() string {
	if c.Advertise != "" {
		return c.Advertise
	}
	return c.ListenEntries()[0].Advertise
}

// validateListen checks every entry of listen; the error names the bad one.
func (c Config) validateListen() error {
	seen := map[string]bool{}
	for i, raw := range strings.Split(c.Listen, ",") {
		e, ok := parseListenEntry(raw)
		a := e.Addr
		bad := func(err error) error { return &FieldError{Field: "listen", Value: a, Err: err} }
		if a == "" {
			return &FieldError{Field: "listen", Value: c.Listen, Err: errListenAdvEmpty}
		}
		if !ok {
			return bad(errListenEntry)
		}
		if err := hostPort(a, true); err != nil {
			return bad(err)
		}
		if err := advertise(e.Advertise); err != nil {
			return &FieldError{Field: "listen", Value: strings.TrimSpace(raw), Err: fmt.Errorf("advertise: %w", err)}
		}
		if i == 0 && e.Advertise != "" && c.Advertise != "" {
			return &FieldError{Field: "advertise", Value: c.Advertise, Err: errAdvertiseTwice}
		}
		host, port, _ := net.SplitHostPort(a)
		if i > 0 {
			if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
				return bad(errListenExtraIP)
			}
		}
		key := net.JoinHostPort(host, port)
		if ip := net.ParseIP(host); ip != nil {
			key = net.JoinHostPort(ip.String(), port)
		}
		if seen[key] && port != "0" {
			return bad(errListenTwice)
		}
		seen[key] = true
	}
	return nil
}

// validateStreamListens checks every entry of tls_listen, ws_listen and
// wss_listen; an address may appear once over all three.
func (c Config) validateStreamListens() error {
	seen := map[string]bool{}
	for _, l := range []struct{ field, value string }{{"tls_listen", c.TLSListen}, {"ws_listen", c.WSListen}, {"wss_listen", c.WSSListen}} {
		if strings.TrimSpace(l.value) == "" {
			continue
		}
		for _, raw := range strings.Split(l.value, ",") {
			e, ok := parseListenEntry(raw)
			bad := func(err error) error { return &FieldError{Field: l.field, Value: strings.TrimSpace(raw), Err: err} }
			switch {
			case e.Addr == "":
				return &FieldError{Field: l.field, Value: l.value, Err: errListenAdvEmpty}
			case !ok:
				return bad(errListenEntry)
			}
			if err := hostPort(e.Addr, true); err != nil {
				return bad(err)
			}
			if err := advertise(e.Advertise); err != nil {
				return bad(fmt.Errorf("advertise: %w", err))
			}
			host, port, _ := net.SplitHostPort(e.Addr)
			key := net.JoinHostPort(host, port)
			if ip := net.ParseIP(host); ip != nil {
				key = net.JoinHostPort(ip.String(), port)
			}
			if seen[key] && port != "0" {
				return bad(errListenTwice)
			}
			seen[key] = true
		}
	}
	return nil
}

// listKeys are the fields the YAML file may give as lists.
var listKeys = map[string]bool{"listen": true, "tls_listen": true, "ws_listen": true, "wss_listen": true}

// listenListToText lets the YAML file give listen (and tls_listen,
// ws_listen, wss_listen) as a list: a sequence under the top-level key
// becomes the comma-separated text that the flag and the environment
// variable take.
func listenListToText(data []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return data, nil // the strict decoder reports it
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return data, nil
	}
	changed := false
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if !listKeys[k.Value] || v.Kind != yaml.SequenceNode {
			continue
		}
		parts := make([]string, 0, len(v.Content))
		for _, e := range v.Content {
			if e.Kind != yaml.ScalarNode {
				return nil, &FieldError{Field: k.Value, Value: e.Value, Err: errors.New("a list entry must be HOST:PORT")}
			}
			parts = append(parts, e.Value)
		}
		*v = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: strings.Join(parts, ",")}
		changed = true
	}
	if !changed {
		return data, nil
	}
	return yaml.Marshal(&doc)
}

// readableFile checks an optional file path names a file that can be read.
func readableFile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return errors.Unwrap(err) // the reason, without repeating the path
	}
	return f.Close()
}
