//go:build !linux

package wsbridge

// Without epoll, every connection's reader waits in Read (see
// idlepoll_linux.go).

func (c *wsConn) canPark() bool               { return false }
func (c *wsConn) park() bool                  { return false }
func (c *wsConn) unpark()                     {}
func (c *wsConn) readNow([]byte) (int, error) { return 0, errWouldBlock }
