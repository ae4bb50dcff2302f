//go:build !linux

package wsbridge

import (
	"net"
	"syscall"
)

// Without epoll, every connection's reader waits in Read (see
// idlepoll_linux.go).

type parker interface{ wake() }

func (k *parking) setup(net.Conn)                        {}
func (k *parking) canPark() bool                         { return false }
func (k *parking) park(parker) bool                      { return false }
func (k *parking) unpark()                               {}
func (k *parking) readNow(net.Conn, []byte) (int, error) { return 0, errWouldBlock }
func (k *parking) canWriteNow() bool                     { return false }

const writeNowWorks = false

func writeNowRaw(syscall.RawConn, []byte) (int, error) { return 0, errWouldBlock }
