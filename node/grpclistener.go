package node

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/herald-io/herald/service"
)

// grpcListener is the gRPC listener's net.Listener, which knows the
// connections it accepted until they close. grpc-go's Stop and
// GracefulStop wait for every accepted connection to finish its handshake
// (TLS and the HTTP/2 preface) before they do anything else, for up to the
// server's connection timeout, 120 s: a load balancer's TCP probe or a
// port scan that connects and sends nothing held a node's shutdown two
// minutes, past any deadline. So at a shutdown the node closes first the
// connections that never sent a byte (they carry no call), and, if the
// graceful stop outlives its grace, all of them (cut). Established
// transports are drained by grpc-go as before (GOAWAY, calls finish).
type grpcListener struct {
	net.Listener
	mu      sync.Mutex
	conns   map[*grpcConn]struct{}
	closing bool
}

func newGRPCListener(l net.Listener) *grpcListener {
	return &grpcListener{Listener: l, conns: make(map[*grpcConn]struct{})}
}

func (l *grpcListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// grpc-go sets this itself on a *net.TCPConn, which the wrapper
		// below hides from it.
		setTCPUserTimeout(tc, service.KeepaliveTimeout)
	}
	gc := &grpcConn{Conn: c, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		_ = c.Close() // grpc-go's handshake fails at once
		return gc, nil
	}
	l.conns[gc] = struct{}{}
	return gc, nil
}

// closeSilent closes the connections that have not sent a byte, and any
// accepted from now on. l may be nil (no listener yet).
func (l *grpcListener) closeSilent() { l.close(false) }

// closeAll cuts every connection still open, and any accepted from now
// on. l may be nil.
func (l *grpcListener) closeAll() { l.close(true) }

func (l *grpcListener) close(all bool) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closing = true
	for c := range l.conns {
		if all || !c.spoke.Load() {
			_ = c.Conn.Close()
		}
	}
}

func (l *grpcListener) forget(c *grpcConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// grpcConn is a connection of the gRPC listener: spoke is set by its
// first read of any byte.
type grpcConn struct {
	net.Conn
	l      *grpcListener
	spoke  atomic.Bool
	closed sync.Once
}

func (c *grpcConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.spoke.Load() {
		c.spoke.Store(true)
	}
	return n, err
}

func (c *grpcConn) Close() error {
	c.closed.Do(func() { c.l.forget(c) })
	return c.Conn.Close()
}
