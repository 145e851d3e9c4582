package config

import (
	"errors"
	"net"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

var (
	errListenExtraIP  = errors.New("a listen address after the first must be an IP address (not a wildcard or a name): it is written into Via and Record-Route as it is")
	errListenTwice    = errors.New("listed twice")
	errListenAdvEmpty = errors.New("empty entry")
)

// ListenAddrs are the SIP listen addresses of listen, a comma-separated
// list: the first is the main one (advertise applies to it), the others
// each get UDP and TCP too.
func (c Config) ListenAddrs() []string {
	parts := strings.Split(c.Listen, ",")
	out := make([]string, 0, len(parts))
	for _, s := range parts {
		out = append(out, strings.TrimSpace(s))
	}
	return out
}

// validateListen checks every entry of listen; the error names the bad one.
func (c Config) validateListen() error {
	seen := map[string]bool{}
	for i, a := range c.ListenAddrs() {
		bad := func(err error) error { return &FieldError{Field: "listen", Value: a, Err: err} }
		if a == "" {
			return &FieldError{Field: "listen", Value: c.Listen, Err: errListenAdvEmpty}
		}
		if err := hostPort(a, true); err != nil {
			return bad(err)
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

// listenListToText lets the YAML file give listen as a list: a sequence
// under the top-level key listen becomes the comma-separated text that the
// flag and the environment variable take.
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
		if k.Value != "listen" || v.Kind != yaml.SequenceNode {
			continue
		}
		parts := make([]string, 0, len(v.Content))
		for _, e := range v.Content {
			if e.Kind != yaml.ScalarNode {
				return nil, &FieldError{Field: "listen", Value: e.Value, Err: errors.New("a list entry must be HOST:PORT")}
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
