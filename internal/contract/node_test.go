package contract

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sipedge/sipedge/internal/keys"
)

func TestParseNode(t *testing.T) {
	good := map[string]string{"addr": "10.0.0.5:5060", "transport": "TCP", "site": "ams", "server": "srv1",
		"weight": "50.5", "maintenance": "1", "capable": "0", "load": "0.25", "heartbeat": "1700000000123",
		"drain_started": "1700000000456", "restored_at": "1690000000000"}
	for _, tc := range []struct {
		name    string
		fields  map[string]string
		want    Node
		wantErr string // exact error text; "" for success
		field   string // FieldError.Field expected with the error
	}{
		{name: "every field", fields: good, want: Node{Name: "n1", Addr: "10.0.0.5:5060", Transport: "tcp",
			Site: "ams", Server: "srv1", Weight: 50.5, Maintenance: true, Capable: false, Load: 0.25,
			Heartbeat: time.UnixMilli(1700000000123), DrainStarted: time.UnixMilli(1700000000456),
			RestoredAt: time.UnixMilli(1690000000000)}},
		{name: "defaults", fields: map[string]string{"addr": "media.example.net:5070"},
			want: Node{Name: "n1", Addr: "media.example.net:5070", Transport: "udp", Weight: 100, Capable: true}},
		{name: "empty optional fields take defaults", fields: map[string]string{"addr": "[::1]:5060", "weight": "",
			"maintenance": "", "capable": " ", "heartbeat": ""},
			want: Node{Name: "n1", Addr: "[::1]:5060", Transport: "udp", Weight: 100, Capable: true}},
		{name: "weight 0 is valid", fields: map[string]string{"addr": "h:1", "weight": "0"},
			want: Node{Name: "n1", Addr: "h:1", Transport: "udp", Weight: 0, Capable: true}},
		{name: "missing addr", fields: map[string]string{"weight": "100"},
			wantErr: `sipedge:node:n1 field "addr": missing`, field: "addr"},
		{name: "addr without port", fields: map[string]string{"addr": "10.0.0.5"},
			wantErr: `sipedge:node:n1 field "addr": "10.0.0.5" is not host:port`, field: "addr"},
		{name: "addr with bad port", fields: map[string]string{"addr": "10.0.0.5:sip"},
			wantErr: `sipedge:node:n1 field "addr": "10.0.0.5:sip" is not host:port`, field: "addr"},
		{name: "addr port 0", fields: map[string]string{"addr": "h:0"},
			wantErr: `sipedge:node:n1 field "addr": "h:0" is not host:port`, field: "addr"},
		{name: "weight abc", fields: map[string]string{"addr": "h:1", "weight": "abc"},
			wantErr: `sipedge:node:n1 field "weight": "abc" is not a number`, field: "weight"},
		{name: "weight NaN", fields: map[string]string{"addr": "h:1", "weight": "NaN"},
			wantErr: `sipedge:node:n1 field "weight": "NaN" is not a number`, field: "weight"},
		{name: "negative weight", fields: map[string]string{"addr": "h:1", "weight": "-5"},
			wantErr: `sipedge:node:n1 field "weight": "-5" is negative`, field: "weight"},
		{name: "bad maintenance", fields: map[string]string{"addr": "h:1", "maintenance": "yes"},
			wantErr: `sipedge:node:n1 field "maintenance": "yes" is not 0 or 1`, field: "maintenance"},
		{name: "bad capable", fields: map[string]string{"addr": "h:1", "capable": "true"},
			wantErr: `sipedge:node:n1 field "capable": "true" is not 0 or 1`, field: "capable"},
		{name: "load above 1", fields: map[string]string{"addr": "h:1", "load": "1.5"},
			wantErr: `sipedge:node:n1 field "load": "1.5" is not a number from 0 to 1`, field: "load"},
		{name: "bad heartbeat", fields: map[string]string{"addr": "h:1", "heartbeat": "2024-01-01T00:00:00Z"},
			wantErr: `sipedge:node:n1 field "heartbeat": "2024-01-01T00:00:00Z" is not unix milliseconds`, field: "heartbeat"},
		{name: "negative heartbeat", fields: map[string]string{"addr": "h:1", "heartbeat": "-1"},
			wantErr: `sipedge:node:n1 field "heartbeat": "-1" is not unix milliseconds`, field: "heartbeat"},
		{name: "bad drain_started", fields: map[string]string{"addr": "h:1", "drain_started": "soon"},
			wantErr: `sipedge:node:n1 field "drain_started": "soon" is not unix milliseconds`, field: "drain_started"},
		{name: "negative restored_at", fields: map[string]string{"addr": "h:1", "restored_at": "-5"},
			wantErr: `sipedge:node:n1 field "restored_at": "-5" is not unix milliseconds`, field: "restored_at"},
		{name: "unknown transport", fields: map[string]string{"addr": "h:1", "transport": "sctp"},
			wantErr: `sipedge:node:n1 field "transport": "sctp" is not udp, tcp, tls, ws or wss`, field: "transport"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseNode(keys.New(""), "n1", tc.fields)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				if got != tc.want {
					t.Errorf("got  %+v\nwant %+v", got, tc.want)
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("error %v, want %s", err, tc.wantErr)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Key != "sipedge:node:n1" || fe.Field != tc.field || fe.Err == nil {
				t.Errorf("error %#v, want a *FieldError for field %q with a sentinel", err, tc.field)
			}
		})
	}
}

// FuzzParseNode: node hashes are written by anyone with redis-cli; no value
// may panic an instance, and whatever is accepted must be usable as is.
func FuzzParseNode(f *testing.F) {
	f.Add("127.0.0.1:5060", "udp", "100", "0", "1", "0.5", "1700000000000")
	f.Add("h:1", "TLS", "1e308", "", "", "", "")
	f.Add("[::1]:99999", "x", "-0", "2", "1", "NaN", "9223372036854775807")
	f.Fuzz(func(t *testing.T, addr, transport, weight, maint, capable, load, hb string) {
		n, err := ParseNode(keys.New(""), "fz", map[string]string{"addr": addr, "transport": transport, "weight": weight,
			"maintenance": maint, "capable": capable, "load": load, "heartbeat": hb})
		if err != nil {
			if !strings.HasPrefix(err.Error(), `sipedge:node:fz`) {
				t.Fatalf("error without origin: %v", err)
			}
			return
		}
		if !(n.Weight >= 0) || !(n.Load >= 0 && n.Load <= 1) || n.Addr == "" {
			t.Fatalf("accepted unusable node %+v", n)
		}
		if n.Transport != strings.ToLower(n.Transport) {
			t.Fatalf("transport %q not lowercased", n.Transport)
		}
	})
}
