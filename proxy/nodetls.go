package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"reflect"
	"unsafe"

	"github.com/emiago/sipgo/sip"
)

// NodeTLSClient makes the client side of a connection sipedge dialled
// toward a node whose record says tls or wss. host is what sipgo dialled:
// the node's IP (or name), the identity its certificate must carry.
// internal/app builds each connection's tls.Config from the node CA pool
// in use at that moment, with ServerName host, so crypto/tls's own
// verification runs in full (chain, and the IP SAN or DNS name).
type NodeTLSClient func(conn net.Conn, host string) *tls.Conn

// ErrNodeTLSHook: sipgo's transports do not have the per-dial TLS hooks
// hookNodeTLS sets (a sipgo other than v1.7.3).
var ErrNodeTLSHook = errors.New("proxy: sipgo's TLS dial hooks not found")

// hookNodeTLS makes sipgo's TLS and WSS transports call client for every
// connection they dial. sipgo v1.7.3 has no option for it: each transport
// keeps the function that wraps a dialled connection in TLS in an
// unexported field (TransportTLS.tlsClient, TransportWS.dialer.TLSClient),
// set once from the user agent's tls.Config. Both are replaced here, after
// the user agent is built and before anything is dialled, so no dial ever
// sees the field change. A type check of each field turns a sipgo that
// moved them into ErrNodeTLSHook at start-up, never a crash.
func hookNodeTLS(layer *sip.TransportLayer, client NodeTLSClient) error {
	if layer == nil || client == nil {
		return fmt.Errorf("%w: no transport layer or client", ErrNodeTLSHook)
	}
	lv := reflect.ValueOf(layer).Elem()
	tlsT, err := settable(lv, "tls", reflect.TypeOf((*sip.TransportTLS)(nil)))
	if err != nil {
		return err
	}
	wssT, err := settable(lv, "wss", reflect.TypeOf((*sip.TransportWSS)(nil)))
	if err != nil {
		return err
	}
	if tlsT.IsNil() || wssT.IsNil() {
		return fmt.Errorf("%w: TLS or WSS transport not created", ErrNodeTLSHook)
	}
	tlsClient, err := settable(tlsT.Elem(), "tlsClient", reflect.TypeOf(func(net.Conn, string) *tls.Conn { return nil }))
	if err != nil {
		return err
	}
	ws := wssT.Elem().FieldByName("TransportWS")
	if !ws.IsValid() || ws.Kind() != reflect.Pointer || ws.IsNil() {
		return fmt.Errorf("%w: TransportWSS.TransportWS", ErrNodeTLSHook)
	}
	dialer, err := settable(ws.Elem(), "dialer", nil)
	if err != nil {
		return err
	}
	wsClient := dialer.FieldByName("TLSClient")
	if !wsClient.IsValid() || !wsClient.CanSet() || wsClient.Type() != reflect.TypeOf(func(net.Conn, string) net.Conn { return nil }) {
		return fmt.Errorf("%w: ws.Dialer.TLSClient", ErrNodeTLSHook)
	}
	tlsClient.Set(reflect.ValueOf(func(c net.Conn, host string) *tls.Conn { return client(c, host) }))
	wsClient.Set(reflect.ValueOf(func(c net.Conn, host string) net.Conn { return client(c, host) }))
	return nil
}

// settable is v's field name, writable although unexported; typ, when
// not nil, is the type it must have.
func settable(v reflect.Value, name string, typ reflect.Type) (reflect.Value, error) {
	f := v.FieldByName(name)
	if !f.IsValid() || typ != nil && f.Type() != typ {
		return reflect.Value{}, fmt.Errorf("%w: %s.%s", ErrNodeTLSHook, v.Type(), name)
	}
	return reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem(), nil
}

// hookNodeTLS installs Secure.NodeTLSClient, when set, into the user agent.
func (p *Proxy) hookNodeTLS() error {
	if p.opts.Secure.NodeTLSClient == nil {
		return nil
	}
	return hookNodeTLS(p.ua.TransportLayer(), p.opts.Secure.NodeTLSClient)
}
