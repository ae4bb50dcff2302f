package wsbridge

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// An idle connection holds no goroutine. Once a WebSocket is connected
// (and once an SSE or HTTP stream is hijacked), a reader that finds
// nothing to read parks its connection here and ends: the socket goes
// into an epoll set of the process's own (one-shot, level-triggered), and
// when the client sends something (a pong, a request, a close) or hangs
// up, the poller starts a new reader for it. A goroutine costs its 2 KB
// stack and ~440 B of runtime state, and the Go heap's growth to its GC
// goal counts the stack twice: most of what an idle connection cost
// before. Deliveries are written by the transport's writer, started on
// demand; cut wakes a parked connection so that it ends and cleans up as
// before.
//
// Sockets park (net.TCPConn, net.UnixConn), and TLS connections over
// them: crypto/tls may hold decrypted bytes that the socket's readiness
// would not show, so a TLS reader asks the connection itself, with a
// deadline already past, before it parks (readNow).

// parker is a connection whose reader parks: wake starts a reader for it.
type parker interface {
	wake()
}

type idlePoller struct {
	epfd int

	mu    sync.Mutex
	conns map[uint64]parker // by the id in the epoll event's data
	next  uint64
}

var (
	pollerOnce sync.Once
	poller     *idlePoller // nil when epoll is unavailable: readers never park
)

// thePoller starts the process's poller on first use.
func thePoller() *idlePoller {
	pollerOnce.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		poller = &idlePoller{epfd: fd, conns: make(map[uint64]parker)}
		go poller.run()
	})
	return poller
}

// run waits for parked sockets to become readable (or hung up) and starts
// a reader for each. It blocks one thread in epoll_wait for the process's
// life.
func (p *idlePoller) run() {
	evs := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(p.epfd, evs, -1)
		if err != nil {
			if err != syscall.EINTR {
				time.Sleep(time.Millisecond) // not expected (EBADF, EFAULT): do not spin
			}
			continue
		}
		p.mu.Lock()
		for i := range evs[:n] {
			id := uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32
			if c := p.conns[id]; c != nil {
				c.wake()
			}
		}
		p.mu.Unlock()
	}
}

func (p *idlePoller) add(c parker) uint64 {
	p.mu.Lock()
	p.next++
	id := p.next
	p.conns[id] = c
	p.mu.Unlock()
	return id
}

func (p *idlePoller) forget(id uint64) {
	p.mu.Lock()
	delete(p.conns, id)
	p.mu.Unlock()
}

// setup takes the socket below nc (a *tls.Conn's too) for parking; it is
// left unset (the reader never parks) for anything else.
func (k *parking) setup(nc net.Conn) {
	raw := nc
	if tc, ok := nc.(*tls.Conn); ok {
		raw, k.tls = tc.NetConn(), true
	}
	if sc, ok := raw.(syscall.Conn); ok {
		k.rc, _ = sc.SyscallConn()
	}
}

// canPark reports whether the reader may park: a socket and a poller.
func (k *parking) canPark() bool {
	if k.rc == nil {
		return false
	}
	return thePoller() != nil
}

// park arms the poller for self (whose parking k is) and reports true if
// the reader must end: the connection is parked, or was woken already by
// cut. When arming fails (the socket is being closed), the reader goes on
// and meets the error.
func (k *parking) park(self parker) bool {
	p := thePoller()
	op := syscall.EPOLL_CTL_MOD
	if k.pollID == 0 {
		k.pollID = p.add(self)
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(k.pollID)),
		Pad:    int32(uint32(k.pollID >> 32)),
	}
	rc := k.rc
	// From here on the connection may be taken over (by the poller once
	// armed, or by cut): nothing of it is touched but the flag.
	k.parked.Store(true)
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = syscall.EpollCtl(p.epfd, op, int(fd), &ev) }); err == nil && cerr == nil {
		return true
	}
	return !k.parked.CompareAndSwap(true, false)
}

// unpark forgets the connection in the poller, when its reader ends.
func (k *parking) unpark() {
	if k.pollID != 0 {
		poller.forget(k.pollID)
		k.pollID = 0
	}
}

// readNow reads from nc (whose socket k has) what has come, without
// waiting: errWouldBlock when nothing has, io.EOF when the client has
// closed.
func (k *parking) readNow(nc net.Conn, p []byte) (int, error) {
	if k.tls {
		return readNowTLS(nc, p)
	}
	n, err := rawNow(k.rc, false, p)
	if err == nil && n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, err
}

// canWriteNow reports whether writeNowRaw works on k.rc: a plain socket.
func (k *parking) canWriteNow() bool { return k.rc != nil && !k.tls }

// writeNowWorks says writeNowRaw can write without waiting here.
const writeNowWorks = true

// writeNowRaw writes to rc's socket what it takes of b at once:
// errWouldBlock when it takes nothing.
func writeNowRaw(rc syscall.RawConn, b []byte) (int, error) { return rawNow(rc, true, b) }

// rawNow reads into b, or writes b, on rc's socket (non-blocking, as Go's
// are) once, without waiting: errWouldBlock when it would have to.
func rawNow(rc syscall.RawConn, write bool, b []byte) (int, error) {
	var n int
	var serr error
	f := func(fd uintptr) bool {
		for {
			if write {
				n, serr = syscall.Write(int(fd), b)
			} else {
				n, serr = syscall.Read(int(fd), b)
			}
			if serr != syscall.EINTR {
				return true
			}
		}
	}
	var err error
	if write {
		err = rc.Write(f)
	} else {
		err = rc.Read(f)
	}
	switch {
	case err != nil:
		return 0, err
	case serr == syscall.EAGAIN:
		return 0, errWouldBlock
	case serr != nil:
		return 0, serr
	}
	return n, nil
}

// readNowTLS is readNow through crypto/tls: bytes it has decrypted
// already come back at once; otherwise the read meets a deadline already
// past. A timeout leaves the connection usable (crypto/tls keeps a
// partial record and does not make a temporary error permanent), and a
// record that has partly come makes the socket readable again when the
// rest does.
func readNowTLS(nc net.Conn, p []byte) (int, error) {
	_ = nc.SetReadDeadline(time.Unix(1, 0))
	n, err := nc.Read(p)
	_ = nc.SetReadDeadline(time.Time{})
	if n > 0 {
		return n, nil
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return 0, errWouldBlock
	}
	return 0, err
}
