package wsbridge

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"syscall"
)

// TLSListener returns a TLS listener on l for the bridge's HTTP listener:
// tls.NewListener(l, config), with l's connections wrapped below TLS so
// that the bridge's writer pool can write to them. The pool (which writes
// for sessions on sockets of their own while the bridge is behind) must
// never wait for a client, and a write to a *tls.Conn cannot be tried
// without waiting (one that timed out spoils the connection). Below TLS,
// a wrapped connection writes each encrypted record as the pool needs:
// what the socket takes at once, then, when it does not take it all, it
// gives the worker's place to another and waits for the rest. Sessions on
// a TLS listener made otherwise keep a writer goroutine of their own, as
// when on time. Connections that are not TCP pass through unchanged.
func TLSListener(l net.Listener, config *tls.Config) net.Listener {
	return tls.NewListener(writeNowListener{l}, config)
}

type writeNowListener struct{ net.Listener }

func (l writeNowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil || !writeNowWorks {
		return c, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c, nil
	}
	return &writeNowConn{TCPConn: tc, rc: rc}, nil
}

// writeNowConn is a TCP connection whose writes, while a pool worker
// writes for the transport t (transport.pooled), take what the socket
// takes at once and detach before they wait.
type writeNowConn struct {
	*net.TCPConn
	rc syscall.RawConn
	t  atomic.Pointer[transport] // set when the connection becomes a session's (a WebSocket, an HTTP/1.x stream)
}

func (c *writeNowConn) Write(b []byte) (int, error) {
	t := c.t.Load()
	if t == nil || !t.pooled.Load() {
		return c.TCPConn.Write(b)
	}
	n, done, err := writeNowOr(t, c.rc, b)
	if done || err != nil {
		return n, err
	}
	m, err := c.TCPConn.Write(b[n:])
	return n + m, err
}

// tlsWriteNow reports whether nc is a *tls.Conn on a connection of
// TLSListener's, and then ties that connection's writes to t.
func tlsWriteNow(nc net.Conn, t *transport) bool {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return false
	}
	wc, ok := tc.NetConn().(*writeNowConn)
	if !ok {
		return false
	}
	wc.t.Store(t)
	return true
}
