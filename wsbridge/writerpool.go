package wsbridge

import (
	"net"
	"runtime"
	"sync"
	"syscall"
)

// writerPool writes for the bridge's sessions on sockets of their own
// (WebSockets; SSE and HTTP streams over HTTP/1.x) while the bridge is
// behind (see noteAge). On time, each session with something to send
// gets a writer goroutine of its own, which writes at once and ends. Under
// overload that is thousands of runnable writers after every fan-out: the
// goroutine fanning the next publication out waits behind all of them
// for its turn, the backlog waits upstream of the sessions' queues, and
// each write carries the one or two frames that arrived since the last.
// While behind, sessions with frames queued wait in the pool's ready list
// instead, in order, and a few workers (as many as the processors) take
// them in turn, one batch each, and put them back at the end while they
// have more: the fan-out gets its turns, each session's queue fills while
// it waits for its next, and each write carries what it holds.
//
// A worker never waits for a client: it writes what the socket takes at
// once (writeNowOr). When the socket is full (a client reading
// slower than it is sent to), the worker gives its place to a new one
// and finishes that session's queue as its own writer, as on time, so a
// slow client delays nobody else. Only sessions whose wire can write that
// way are pooled (transport.poolable): those on a plain socket, and under
// TLS on a connection of TLSListener, which writes each
// encrypted record that way (a write to a *tls.Conn itself cannot be
// tried without waiting, and one that timed out spoils the connection).
type writerPool struct {
	mu sync.Mutex
	// ready is the sessions waiting for a worker, from head on: each one
	// at most once (its transport's writing flag is set while it is
	// here), so the list is bounded by the sessions.
	ready   []*transport
	head    int
	workers int // workers running
	max     int // poolWorkers, taken at the first push
}

// poolWorkers is how many workers a pool runs at most: one per processor
// keeps them all busy (a worker never waits), and no more are runnable.
func poolWorkers() int { return runtime.GOMAXPROCS(0) }

// push puts t at the end of the ready list (its writing flag set) and
// starts a worker when fewer than max run.
func (p *writerPool) push(t *transport) {
	p.mu.Lock()
	p.ready = append(p.ready, t)
	if p.max == 0 {
		p.max = poolWorkers()
	}
	start := p.workers < p.max
	if start {
		p.workers++
	}
	p.mu.Unlock()
	if start {
		t.b.wg.Add(1)
		go p.work(t.b)
	}
}

// popLocked takes the first session of the ready list, nil when it is empty
// (the worker then ends). p.mu must be held.
func (p *writerPool) popLocked() *transport {
	if p.head == len(p.ready) {
		clear(p.ready)
		p.ready, p.head = p.ready[:0], 0
		if cap(p.ready) > 4096 {
			p.ready = nil
		}
		return nil
	}
	t := p.ready[p.head]
	p.ready[p.head] = nil
	p.head++
	if p.head >= 1024 && p.head*2 >= len(p.ready) {
		n := copy(p.ready, p.ready[p.head:])
		clear(p.ready[n:])
		p.ready, p.head = p.ready[:n], 0
	}
	return t
}

// work writes one batch for each session it takes, and puts the session
// back at the end of the list while it may have more.
func (p *writerPool) work(b *Bridge) {
	defer b.wg.Done()
	for {
		p.mu.Lock()
		t := p.popLocked()
		if t == nil {
			p.workers--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		t.pooled.Store(true)
		more := t.writeOnce()
		if !t.pooled.CompareAndSwap(true, false) {
			// Detached: this goroutine's place in the pool went to
			// another (a write had to wait for the client); it
			// finishes t's queue as t's own writer and ends.
			for more {
				more = t.writeOnce()
			}
			return
		}
		if more {
			p.mu.Lock()
			p.ready = append(p.ready, t)
			p.mu.Unlock()
		}
	}
}

// release gives up the calling worker's place (detach), and starts a
// worker in its stead when sessions are waiting.
func (p *writerPool) release(b *Bridge) {
	p.mu.Lock()
	start := p.head < len(p.ready)
	if !start {
		p.workers--
	}
	p.mu.Unlock()
	if start {
		b.wg.Add(1)
		go p.work(b)
	}
}

// poolable reports whether a pool worker may write to nc for t, whose
// socket k has (parking.setup done): a plain socket, or TLS on a
// connection of TLSListener (which it then ties to t).
func poolable(t *transport, k *parking, nc net.Conn) bool {
	return k.canWriteNow() || tlsWriteNow(nc, t)
}

// writePooled writes b to nc, t's connection, whose socket k has. A pool
// worker's write (t.pooled) on a plain socket goes through writeNowOr;
// under TLS the connection below crypto/tls (writeNowConn) does the same
// for each record.
func writePooled(t *transport, k *parking, nc net.Conn, b []byte) error {
	if !k.tls && t.pooled.Load() {
		n, done, err := writeNowOr(t, k.rc, b)
		if done || err != nil {
			return err
		}
		b = b[n:]
	}
	return t.writeOut(nc, b)
}

// writeNowOr writes what rc's socket takes of b at once, for a pool
// worker writing for t, and reports how much and whether that was all.
// When it was not, t is detached (the worker gives its place away) and the
// caller writes b[n:] as any other write, waiting for the client.
func writeNowOr(t *transport, rc syscall.RawConn, b []byte) (n int, done bool, err error) {
	n, err = writeNowRaw(rc, b)
	switch {
	case err == errWouldBlock:
		n = 0
	case err != nil:
		return 0, false, err
	case n == len(b):
		return n, true, nil
	}
	t.detach()
	return n, false, nil
}
