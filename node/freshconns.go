package node

import (
	"net"
	"net/http"
	"sync"
)

// freshConns tracks the HTTP listener's connections that have not sent a
// request yet (http.StateNew): a browser's preconnected socket, a load
// balancer's TCP probe, a TLS handshake under way. http.Server.Shutdown
// counts such a connection as busy until it is 5 s old, so one of them
// held every shutdown (a rolling restart, a test's bridge restart) 5 s
// longer than its work. On shutdown the node closes them itself, and any
// that arrives after: they carry no request, so nothing accepted is cut.
type freshConns struct {
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
}

// track is the server's ConnState hook.
func (f *freshConns) track(c net.Conn, s http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case s != http.StateNew:
		delete(f.conns, c)
	case f.closing:
		_ = c.Close()
	default:
		if f.conns == nil {
			f.conns = make(map[net.Conn]struct{})
		}
		f.conns[c] = struct{}{}
	}
}

// closeAll closes the connections yet to send a request, now and from now on.
func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closing = true
	for c := range f.conns {
		_ = c.Close()
	}
	clear(f.conns)
}
