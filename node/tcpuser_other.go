//go:build !linux

package node

import (
	"net"
	"time"
)

// setTCPUserTimeout does nothing where TCP_USER_TIMEOUT is not known.
func setTCPUserTimeout(*net.TCPConn, time.Duration) {}
