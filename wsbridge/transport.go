package wsbridge

import (
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// transportKind names how a session's frames travel, for metrics, logs and
// the authenticator.
type transportKind uint8

const (
	transportWebSocket  transportKind = iota // /ws
	transportSSE                             // /sse (EventSource)
	transportHTTPStream                      // /stream (a streaming fetch)
	numTransports
)

var transportNames = [numTransports]string{"websocket", "sse", "http_stream"}

func (k transportKind) String() string { return transportNames[k] }

// unidirectional reports whether the client cannot send on the transport
// once it is open, and sends its commands by POST (command.go).
func (k transportKind) unidirectional() bool { return k != transportWebSocket }

// outFrame is one queued server frame. b is shared with every other
// session it was queued to and never modified. pos, when set, is the
// position the frame brings its channel to (a publication, or the start of
// a subscription that did not recover): transports whose resume state
// travels with their frames (SSE event ids) read it; the others ignore it.
type outFrame struct {
	b   []byte
	pos *heraldv1.Publication
}

// wire is the part of a transport that differs between WebSocket, SSE and
// HTTP streaming: how a batch of frames is written, and how the connection
// is cut. Every wire owns every byte it writes; nothing else writes to its
// connection.
type wire interface {
	// write writes one batch, building its bytes in out (an empty pooled
	// buffer), and returns out for reuse, possibly grown. After the frames
	// of a batch with last set, the wire ends its stream (a WebSocket close
	// frame; the end of an HTTP response). It is called by the transport's
	// writer goroutine only, one batch at a time.
	write(out []byte, bt *batch) ([]byte, error)
	// cut closes the connection at once: reads and writes in progress fail.
	cut()
	// missedPong reports, at each heartbeat, whether the client failed to
	// answer the previous one (the transport then closes with 4009), and
	// arms the check for the next. Wires without pongs return false.
	missedPong() bool
}

// transport carries one session's frames to its client. It is the bounded
// outbound queue every transport shares, and a wire that writes batches:
// frames are queued without blocking (over the queue's limits the session
// is closed as a slow consumer, and nobody else waits); a writer goroutine
// exists only while there is something to send, takes everything queued
// at once and hands it to the wire, which packs it into as few writes as
// it can in a pooled buffer (no allocation per delivery). While the
// bridge is behind, a poolable transport's batches are written by the
// bridge's writerPool instead, one batch a turn. A write that does not
// end is cut by the heartbeat rather than by a deadline per write.
//
// A transport is embedded in its wire's connection type (wsConn, httpConn)
// so that a connection is one allocation.
//
// The fields are ordered so that the small ones share words: a
// connection's size is what every idle connection costs.
type transport struct {
	b       *Bridge
	w       wire
	s       *session // the session carried; set once, before any frame
	writeFn func()   // t.writeLoop, made once: starting the writer allocates nothing
	kind    transportKind
	format  format
	// poolable says the wire can write without waiting (on a socket of
	// its own, plain, or under TLS on TLSListener), so that a
	// writerPool worker may write for it. Set once, before any frame.
	poolable bool

	writeSince atomic.Int64 // unix nanos when the current write began; 0: none
	// pooled is set while a writerPool worker writes a batch for the
	// transport. A write about to wait for the client clears it (detach),
	// giving the worker's place in the pool to a new worker; the
	// goroutine then finishes the queue as the transport's own writer.
	pooled atomic.Bool

	mu             sync.Mutex // guards below; held briefly, never while taking another lock
	queue          []outFrame // frames to send
	qbytes         int        // bytes of queue
	rbytes, rcount int        // of those, the bytes and frames of replies (enqueueReplies)
	pong           []byte     // the writer must send a pong with this payload (non-nil; WebSocket)
	closeMsg       string
	closeCode      CloseCode
	closeDelay     uint32 // the reconnect delay advised, in ms
	writing        bool   // a writer goroutine is running
	ping           bool   // the writer must send a heartbeat
	closing        bool   // no more frames are accepted; the wire ends the stream after the queue
	closeReconnect bool   // whether the client is told to reconnect
	dead           bool   // nothing more is written
}

func (t *transport) init(b *Bridge, w wire, kind transportKind, f format) {
	t.b, t.w, t.kind, t.format = b, w, kind, f
	t.writeFn = t.writeLoop
}

// enqueue queues a frame for sending without ever blocking. Over the
// queue's limits the session is closed as a slow consumer.
func (t *transport) enqueue(f outFrame) {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return
	}
	if len(t.queue)-t.rcount >= t.b.cfg.QueueFrames || t.qbytes-t.rbytes+len(f.b) > t.b.cfg.QueueBytes {
		t.mu.Unlock()
		t.b.nSlow.Add(1)
		t.s.closeWith(CloseSlowConsumer, "slow consumer: too many unsent frames; reconnect and recover", true, 0)
		return
	}
	t.queue = append(t.queue, f)
	t.qbytes += len(f.b)
	start := t.startWriterLocked()
	t.mu.Unlock()
	if start {
		t.goWriter()
	}
}

// replyBudgetFactor times bridge.queue_bytes is what a connection may
// have queued in replies to its own requests (enqueueReplies).
const replyBudgetFactor = 16

// enqueueReplies queues frames that answer the client's own request (a
// reply; a subscription's reply with its recovered publications, in
// order), all or none, and reports whether it did. They are bounded by
// replyBudgetFactor × queue_bytes, not by queue_bytes and queue_frames,
// which bound what is pushed to a client whether it asks or not: a client
// that keeps up can ask for more at once than those allow (a history page
// of 20 publications of 60 KB; recovering them after a reconnect), and
// was closed as a slow consumer for it, again on every reconnect. When
// they do not fit, tooBig says whether they never could (else the
// client's earlier replies fill the budget; it may retry).
func (t *transport) enqueueReplies(frames ...outFrame) (ok, tooBig bool) {
	n := 0
	for _, f := range frames {
		n += len(f.b)
	}
	budget := replyBudgetFactor * t.b.cfg.QueueBytes
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return true, false
	}
	if t.rbytes+n > budget {
		t.mu.Unlock()
		return false, n > budget
	}
	t.queue = append(t.queue, frames...)
	t.qbytes += n
	t.rbytes += n
	t.rcount += len(frames)
	start := t.startWriterLocked()
	t.mu.Unlock()
	if start {
		t.goWriter()
	}
	return true, false
}

// send queues bytes that advance no channel position.
func (t *transport) send(b []byte) { t.enqueue(outFrame{b: b}) }

// close queues final (the encoded DisconnectFrame) after what is queued
// already (a slow consumer's queue is dropped), after which the wire ends
// the stream with code (and, where the wire can say it, the reconnect
// delay advised). Only the first call counts; it reports whether it
// was the first.
func (t *transport) close(code CloseCode, reason string, final []byte, reconnect bool, delayMs uint32) bool {
	t.mu.Lock()
	if t.closing || t.dead {
		t.mu.Unlock()
		return false
	}
	if code == CloseSlowConsumer {
		clear(t.queue)
		t.queue, t.qbytes, t.rbytes, t.rcount = t.queue[:0], 0, 0, 0
	}
	t.closing = true
	t.closeCode, t.closeMsg, t.closeReconnect, t.closeDelay = code, reason, reconnect, delayMs
	if final != nil {
		t.queue = append(t.queue, outFrame{b: final})
	}
	start := t.startWriterLocked()
	t.mu.Unlock()
	if start {
		t.goWriter()
	}
	return true
}

// kill cuts the connection; its reader then ends and the session cleans up.
func (t *transport) kill() {
	t.mu.Lock()
	t.dead = true
	t.closing = true
	t.mu.Unlock()
	t.w.cut()
}

func (t *transport) isClosing() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closing
}

// heartbeat runs each ping interval (under a registry lock: it must not
// block). A write stuck past writeWait is cut; a client that did not
// answer the previous ping is closed; otherwise a heartbeat is queued.
func (t *transport) heartbeat() {
	if t.stuckWrite(time.Now()) {
		t.kill() // the write returns with an error and the reader ends
		return
	}
	if t.w.missedPong() {
		t.s.closeWith(CloseNoPong, "no pong within the ping interval", true, 0)
		return
	}
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return
	}
	t.ping = true
	start := t.startWriterLocked()
	t.mu.Unlock()
	if start {
		t.goWriter()
	}
}

// sendPong queues a pong with data (a copy is kept), through the writer
// like every other write.
func (t *transport) sendPong(data string) {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return
	}
	t.pong = append(make([]byte, 0, len(data)), data...)
	start := t.startWriterLocked()
	t.mu.Unlock()
	if start {
		t.goWriter()
	}
}

// startWriterLocked marks the writer running and reports whether it must
// be started: t.mu must be held, and the caller calls goWriter after
// unlocking.
func (t *transport) startWriterLocked() bool {
	if t.writing {
		return false
	}
	t.writing = true
	return true
}

// goWriter runs writeLoop in a new goroutine owned by the bridge, or,
// while the bridge is behind, hands a poolable transport to its
// writerPool.
func (t *transport) goWriter() {
	if t.poolable && t.b.behind.Load() {
		t.b.wpool.push(t)
		return
	}
	t.b.wg.Add(1)
	go t.writeFn()
}

// waitWriter waits, at most d, for the writer to have sent what is queued.
func (t *transport) waitWriter(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		t.mu.Lock()
		w := t.writing
		t.mu.Unlock()
		if !w {
			return
		}
	}
}

// queued returns the bytes queued and not yet written.
func (t *transport) queued() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.qbytes
}

// batch is a writer's snapshot of its queue; batches are pooled so that
// steady delivery allocates nothing.
type batch struct {
	frames []outFrame
	ping   bool      // send a heartbeat first
	pong   []byte    // send a pong with this payload first (non-nil)
	last   bool      // end the stream after the frames
	code   CloseCode // with last
	reason string    // with last
	delay  uint32    // with last: the reconnect delay advised, in ms
	recon  bool      // with last: whether the client is told to reconnect
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

// outBuf is a writer's output buffer, pooled.
type outBuf struct{ b []byte }

var outPool = sync.Pool{New: func() any { return &outBuf{b: make([]byte, 0, 4096)} }}

// maxPooledOut bounds the output buffers kept in outPool.
const maxPooledOut = 256 << 10

// writeLoop sends what is queued until the queue is empty, and then ends.
func (t *transport) writeLoop() {
	defer t.b.wg.Done()
	if t.b.behind.Load() {
		t.yieldForMore()
	}
	for t.writeOnce() {
	}
}

// writeOnce writes what is queued as one batch and reports true; when
// nothing is (or nothing more may be written), it clears t.writing and
// reports false: the caller is no longer the transport's writer.
func (t *transport) writeOnce() bool {
	t.mu.Lock()
	if t.dead || (len(t.queue) == 0 && !t.ping && t.pong == nil && !t.closing) {
		t.writing = false
		// A connection sent one frame at a time keeps its one-frame
		// queue (no allocation per delivery); a burst's (the replies
		// at connect, a backlog) is not kept on an idle connection.
		if cap(t.queue) > 1 {
			t.queue = nil
		}
		t.mu.Unlock()
		return false
	}
	bt := batchPool.Get().(*batch)
	bt.frames = append(bt.frames[:0], t.queue...)
	clear(t.queue)
	t.queue, t.qbytes, t.rbytes, t.rcount = t.queue[:0], 0, 0, 0
	bt.ping, bt.pong, bt.last = t.ping, t.pong, t.closing
	bt.code, bt.reason, bt.delay, bt.recon = t.closeCode, t.closeMsg, t.closeDelay, t.closeReconnect
	t.ping, t.pong = false, nil
	t.mu.Unlock()

	ob := outPool.Get().(*outBuf)
	out, err := t.w.write(ob.b[:0], bt)
	if n := len(bt.frames); n > 0 {
		metricFramesSent[t.kind][t.format].Add(float64(n))
	}
	last := bt.last
	clear(bt.frames)
	bt.frames, bt.pong, bt.reason = bt.frames[:0], nil, ""
	batchPool.Put(bt)
	if cap(out) <= maxPooledOut {
		ob.b = out[:0]
		outPool.Put(ob)
	}
	if err == nil && last {
		t.mu.Lock()
		t.dead = true // nothing more is written; the reader waits for the end
		t.mu.Unlock()
	}
	if err != nil {
		t.kill()
	}
	return true
}

// yieldForMore lets what is already runnable go first (the bridge is
// behind, see noteAge): during a fan-out to many sessions, the goroutines
// that receive the next publications from the core run before this batch
// leaves, so that several frames go out in each write instead of one write
// per frame. While frames keep coming during a yield (publications
// arriving faster than the sessions' writes), it yields again, up to
// twice, so that each write carries more of them.
func (t *transport) yieldForMore() {
	n := t.queued()
	runtime.Gosched()
	for i := 0; i < 2; i++ {
		m := t.queued()
		if m == n {
			return
		}
		n = m
		runtime.Gosched()
	}
}

// detach makes the pool worker writing for t t's own writer, from now
// until t's queue is empty: its write is about to wait for the client.
func (t *transport) detach() {
	if t.pooled.CompareAndSwap(true, false) {
		metricPoolDetaches.Add(1)
		t.b.wpool.release(t.b)
	}
}

// writeOut writes b to w, recording when the write began so that the
// heartbeat can cut a write that does not end. Wires call it for every
// write.
func (t *transport) writeOut(w io.Writer, b []byte) error {
	t.writeSince.Store(time.Now().UnixNano())
	_, err := w.Write(b)
	t.writeSince.Store(0)
	return err
}

// stuckWrite reports whether a write has been waiting longer than
// writeWait.
func (t *transport) stuckWrite(now time.Time) bool {
	since := t.writeSince.Load()
	return since != 0 && now.UnixNano()-since > int64(writeWait)
}
