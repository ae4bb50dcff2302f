package node

import (
	"net"
	"syscall"
	"time"
)

// tcpUserTimeout is Linux's TCP_USER_TIMEOUT (linux/tcp.h).
const tcpUserTimeout = 0x12

// setTCPUserTimeout bounds how long the kernel keeps unacknowledged data
// before it fails the connection. Best effort, as in grpc-go.
func setTCPUserTimeout(c *net.TCPConn, d time.Duration) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(d/time.Millisecond))
	})
}
