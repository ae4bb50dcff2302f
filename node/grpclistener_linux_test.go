package node

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/herald-io/herald/service"
)

// TestGRPCListener: an accepted connection keeps grpc-go's
// TCP_USER_TIMEOUT although the wrapper hides its *net.TCPConn;
// closeSilent closes only the connections that sent nothing; a closed
// connection is forgotten.
func TestGRPCListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newGRPCListener(inner)
	defer l.Close()
	accept := func(first string) (client net.Conn, server *grpcConn) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if first != "" {
			_, _ = c.Write([]byte(first))
			if _, err := s.Read(make([]byte, len(first))); err != nil {
				t.Fatal(err)
			}
		}
		return c, s.(*grpcConn)
	}
	quiet, qs := accept("")
	spoke, ss := accept("PRI")

	rc, err := qs.Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ms int
	_ = rc.Control(func(fd uintptr) { ms, err = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout) })
	if err != nil || ms != int(service.KeepaliveTimeout/time.Millisecond) {
		t.Fatalf("TCP_USER_TIMEOUT = %d ms (%v), want %v", ms, err, service.KeepaliveTimeout)
	}

	l.closeSilent()
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		ne, ok := err.(net.Error)
		return err != nil && !(ok && ne.Timeout())
	}
	if !closed(quiet) {
		t.Fatal("the silent connection stayed open")
	}
	if closed(spoke) {
		t.Fatal("a connection that spoke was closed by closeSilent")
	}
	_ = qs.Close()
	if l.mu.Lock(); len(l.conns) != 1 {
		t.Fatalf("%d connections tracked after one closed, want 1", len(l.conns))
	}
	l.mu.Unlock()
	l.closeAll()
	if !closed(spoke) {
		t.Fatal("closeAll left a connection open")
	}
	_ = ss.Close()
}
