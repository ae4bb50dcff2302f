package wsbridge

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"golang.org/x/time/rate"
)

// conn is one browser connection. Its reader goroutine owns the request
// state (identity, limiter); the outbound queue is shared with the fan-out
// and guarded by mu; the writer goroutine runs only while the queue has
// something to send.
type conn struct {
	b      *Bridge
	ws     *websocket.Conn
	format format
	id     string

	// Set by the reader at connect; read by other goroutines only after
	// authed is true (user never changes after that). info is built by
	// clientInfo on the first subscription to a presence namespace.
	user      string
	info      *heraldv1.ClientInfo
	userAdded bool
	authed    atomic.Bool

	// Reader-only.
	ident    *identity
	limiter  *rate.Limiter
	strikes  int
	badCount int
	expTimer *time.Timer

	lastSeen   atomic.Int64 // unix nanos of the last pong or message
	awaitPong  atomic.Bool
	writeSince atomic.Int64 // unix nanos when the current socket write began; 0: none
	writeFn    func()       // c.writeLoop, made once

	subMu sync.Mutex
	subs  []*channel // channels this connection is subscribed to; few, so a slice (a map costs ~250 bytes)

	mu        sync.Mutex // guards the fields below; held briefly, never while taking another lock
	queue     [][]byte   // frames to send; shared bytes, never modified
	qbytes    int
	writing   bool   // a writer goroutine is running
	ping      bool   // the writer must send a ping
	pong      []byte // the writer must send a pong with this payload (non-nil)
	closing   bool   // no more frames are accepted; the writer sends a close after the queue
	closeCode CloseCode
	closeMsg  string
	dead      bool // the socket is closed
}

func newConn(b *Bridge, ws *websocket.Conn) *conn {
	c := &conn{b: b, ws: ws, id: randomID(8)}
	c.writeFn = c.writeLoop
	if ws.Subprotocol() == SubprotocolProto {
		c.format = formatProto
	}
	c.lastSeen.Store(time.Now().UnixNano())
	return c
}

func (c *conn) messageType() int {
	if c.format == formatProto {
		return websocket.BinaryMessage
	}
	return websocket.TextMessage
}

// enqueue queues a frame for sending without ever blocking. Over the
// queue's limits the connection is closed as a slow consumer. b is shared:
// the connection never modifies it.
func (c *conn) enqueue(b []byte) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= c.b.cfg.QueueFrames || c.qbytes+len(b) > c.b.cfg.QueueBytes {
		c.mu.Unlock()
		c.b.nSlow.Add(1)
		c.closeWith(CloseSlowConsumer, "slow consumer: too many unsent frames; reconnect and recover", true, 0)
		return
	}
	c.queue = append(c.queue, b)
	c.qbytes += len(b)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		c.goWriter()
	}
}

// send encodes and queues a reply or push.
func (c *conn) send(fr *heraldv1.ServerFrame) { c.enqueue(encodeFrame(c.format, fr)) }

func (c *conn) sendError(id uint32, e *requestError) { c.send(errorFrame(id, e)) }

// closeWith closes the connection: a DisconnectFrame is queued after what
// is queued already (a slow consumer's queue is dropped), then the writer
// sends a close message with code. The socket is cut closeGrace later
// whether or not the client completed the close. Only the first call counts.
func (c *conn) closeWith(code CloseCode, reason string, reconnect bool, delayMs uint32) {
	reason = validUTF8(reason)
	c.mu.Lock()
	if c.closing || c.dead {
		c.mu.Unlock()
		return
	}
	if code == CloseSlowConsumer {
		clear(c.queue)
		c.queue, c.qbytes = c.queue[:0], 0
	}
	c.closing = true
	c.closeCode, c.closeMsg = code, reason
	c.queue = append(c.queue, encodeFrame(c.format, &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Disconnect{
		Disconnect: &heraldv1.DisconnectFrame{Code: uint32(code), Reason: reason, Reconnect: reconnect, ReconnectDelayMs: delayMs},
	}}))
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	c.onClose(code, reason)
	if start {
		c.goWriter()
	}
	time.AfterFunc(closeGrace, c.kill)
}

// kill closes the socket; the reader then ends and cleans up.
func (c *conn) kill() {
	c.mu.Lock()
	c.dead = true
	c.closing = true
	c.mu.Unlock()
	_ = c.ws.NetConn().Close()
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// heartbeat runs each ping interval (under a registry lock: it must not
// block). A connection that has not answered the previous ping is closed.
func (c *conn) heartbeat() {
	if c.stuckWrite(time.Now()) {
		c.kill() // the write returns with an error and the reader ends
		return
	}
	if c.awaitPong.Load() {
		c.closeWith(CloseNoPong, "no pong within the ping interval", true, 0)
		return
	}
	c.awaitPong.Store(true)
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.ping = true
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		c.goWriter()
	}
}

func (c *conn) alive() {
	c.lastSeen.Store(time.Now().UnixNano())
	c.awaitPong.Store(false)
}

// batch is a writer's snapshot of a queue; batches are pooled so that
// steady delivery allocates nothing.
type batch struct{ frames [][]byte }

var batchPool = sync.Pool{New: func() any { return new(batch) }}

// outBuf is a writer's output buffer, pooled: the WebSocket frames of one
// write are built in it.
type outBuf struct{ b []byte }

var outPool = sync.Pool{New: func() any { return &outBuf{b: make([]byte, 0, 4096)} }}

// maxPooledOut bounds the output buffers kept in outPool.
const maxPooledOut = 256 << 10

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opText   = 1
	opBinary = 2
	opClose  = 8
	opPing   = 9
	opPong   = 10
)

// startWriter marks the writer running and reports whether it must be
// started: c.mu must be held, and the caller calls goWriter after
// unlocking.
func (c *conn) startWriter() bool {
	if c.writing {
		return false
	}
	c.writing = true
	return true
}

// goWriter runs writeLoop in a new goroutine. c.writeFn is made once per
// connection, so starting the writer allocates nothing.
func (c *conn) goWriter() {
	c.b.wg.Add(1)
	go c.writeFn()
}

// writeLoop sends what is queued, packed into as few messages and socket
// writes as it can, until the queue is empty, and then ends.
//
// The writer frames messages itself and writes them to the socket in one
// call per batch of up to maxMessage bytes: gorilla's NextWriter and
// WriteMessage allocate per message (the writer object, the buffer pool's
// interface boxing), and a write deadline per write costs a timer update.
// A write stuck on a socket that does not drain is cut by the heartbeat
// (stuckWrite) instead, or by closeGrace after a slow-consumer close.
func (c *conn) writeLoop() {
	defer c.b.wg.Done()
	// Let what is already runnable go first: during a fan-out to many
	// connections, the goroutines that receive the next publications from
	// the core run before this batch leaves, so that under load several
	// frames go out in each write instead of one write per frame.
	runtime.Gosched()
	for {
		c.mu.Lock()
		if c.dead || (len(c.queue) == 0 && !c.ping && c.pong == nil) {
			c.writing = false
			if cap(c.queue) > 64 {
				c.queue = nil // do not keep a burst's queue on an idle connection
			}
			c.mu.Unlock()
			return
		}
		bt := batchPool.Get().(*batch)
		bt.frames = append(bt.frames[:0], c.queue...)
		clear(c.queue)
		c.queue, c.qbytes = c.queue[:0], 0
		ping, pong, closing := c.ping, c.pong, c.closing
		c.ping, c.pong = false, nil
		code, msg := c.closeCode, c.closeMsg
		c.mu.Unlock()

		ob := outPool.Get().(*outBuf)
		out := ob.b[:0]
		if ping {
			out = appendFrameHeader(out, opPing, 0)
		}
		if pong != nil {
			out = appendFrameHeader(out, opPong, len(pong))
			out = append(out, pong...)
		}
		var err error
		for frames := bt.frames; len(frames) > 0 && err == nil; {
			var n int
			out, n = c.appendMessage(out, frames)
			frames = frames[n:]
			if len(frames) > 0 {
				err = c.writeOut(out)
				out = out[:0]
			}
		}
		if len(bt.frames) > 0 {
			metricFramesSent[c.format].Add(float64(len(bt.frames)))
		}
		clear(bt.frames)
		bt.frames = bt.frames[:0]
		batchPool.Put(bt)
		if closing {
			reason := closeReason(msg)
			out = appendFrameHeader(out, opClose, 2+len(reason))
			out = append(out, byte(code>>8), byte(code))
			out = append(out, reason...)
		}
		if err == nil && len(out) > 0 {
			err = c.writeOut(out)
		}
		if cap(out) <= maxPooledOut {
			ob.b = out[:0]
			outPool.Put(ob)
		}
		if err == nil && closing {
			c.mu.Lock()
			c.dead = true // nothing more is written; the reader waits for the client's close
			c.mu.Unlock()
		}
		if err != nil {
			c.kill()
		}
	}
}

// writeOut writes b to the socket, recording when the write began so that
// the heartbeat can cut a write that does not end.
func (c *conn) writeOut(b []byte) error {
	c.writeSince.Store(time.Now().UnixNano())
	_, err := c.ws.NetConn().Write(b)
	c.writeSince.Store(0)
	return err
}

// stuckWrite reports whether a socket write has been waiting longer than
// writeWait.
func (c *conn) stuckWrite(now time.Time) bool {
	since := c.writeSince.Load()
	return since != 0 && now.UnixNano()-since > int64(writeWait)
}

// appendMessage appends one WebSocket message packing frames from the
// start of frames, as many as fit in maxMessage bytes (a larger frame goes
// alone), and returns how many it took: JSON frames separated by "\n",
// protobuf frames already length-prefixed.
func (c *conn) appendMessage(out []byte, frames [][]byte) ([]byte, int) {
	sep := 0
	op := byte(opBinary)
	if c.format == formatJSON {
		sep, op = 1, opText
	}
	size, n := 0, 0
	for ; n < len(frames); n++ {
		l := len(frames[n])
		if n > 0 {
			l += sep
			if size+l > maxMessage {
				break
			}
		}
		size += l
	}
	out = appendFrameHeader(out, op, size)
	for i, f := range frames[:n] {
		if i > 0 && sep > 0 {
			out = append(out, '\n')
		}
		out = append(out, f...)
	}
	return out, n
}

// appendFrameHeader appends the header of an unmasked, final WebSocket
// frame (server to client) with a payload of n bytes.
func appendFrameHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n <= 125:
		return append(b, byte(n))
	case n <= 0xffff:
		return append(b, 126, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
}

// closeReason truncates a reason to what a close frame can carry.
func closeReason(s string) string {
	const max = 123
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// readLoop reads and handles the client's frames until the socket ends,
// then cleans up. It runs in its own goroutine, started after the HTTP
// handler has returned.
//
// An idle connection's reader waits in readMessages, so the stack in use
// there must stay small: under ~1 KB, the reader fits Go's minimum 2 KB
// stack, and the runtime's starting stack size (the average in use at the
// last GC, plus a guard, rounded up) stays 2 KB for every new goroutine.
// Gorilla's read path to the socket takes most of that budget, so the
// loop waits in NextReader itself, one frame below the goroutine's entry:
// no defers, setup and error handling in functions of their own, the
// message read and handled in received, and handled by process in a
// goroutine of its own. (Measured: one more frame of ~60 bytes between
// the goroutine's entry and NextReader raises the starting size to 4 KB.)
func (c *conn) readLoop() {
	c.readSetup()
	var err error
	for {
		var r io.Reader
		if _, r, err = c.ws.NextReader(); err != nil {
			break
		}
		if err = c.received(r); err != nil {
			break
		}
	}
	c.readEnded(err)
	c.cleanup()
	c.b.wg.Done()
}

// readSetup registers the connection and installs the read handlers.
func (c *conn) readSetup() {
	c.b.register(c)
	if c.b.closing.Load() {
		c.closeWith(CloseShutdown, "server shutting down; reconnect", true, 1000)
	}
	c.ws.SetReadLimit(int64(c.b.cfg.MaxFrame))
	_ = c.ws.SetReadDeadline(time.Now().Add(connectTimeout))
	c.ws.SetPongHandler(func(string) error { c.alive(); return nil })
	// Pongs go out through the writer, like every other write: gorilla's
	// default handler would write from the reader with a deadline of its
	// own, which would then cut the writer's later writes.
	c.ws.SetPingHandler(func(data string) error {
		c.alive()
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return nil
		}
		c.pong = append(make([]byte, 0, len(data)), data...)
		start := c.startWriter()
		c.mu.Unlock()
		if start {
			c.goWriter()
		}
		return nil
	})
}

// readEnded handles the error that ended reading.
func (c *conn) readEnded(err error) {
	var ne interface{ Timeout() bool }
	if !c.authed.Load() && errors.As(err, &ne) && ne.Timeout() {
		// No connect in time: the read deadline is spent; say why and let
		// the hard timer close the socket.
		c.closeWith(CloseInvalidToken, "no connect frame within 10s", false, 0)
		c.waitWriter(time.Second)
	}
}

// received reads and handles one client message.
func (c *conn) received(r io.Reader) error {
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	c.alive()
	if !c.isClosing() {
		c.process(msg)
	}
	return nil
}

// process handles one client message in a goroutine of its own, and waits
// for it. Connect (JWT verification) and requests (protojson, calls to the
// core) need deep stacks; grown in the long-lived reader, a stack stays
// grown for the connection's life, and because Go starts new goroutines
// with the average stack size seen at the last GC, every new reader and
// writer would start bigger too. Client messages are rare next to
// deliveries, so a goroutine each costs little.
func (c *conn) process(msg []byte) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		decodeFrames(c.format, msg, c.handle)
	}()
	<-done
}

// waitWriter waits, at most d, for the writer to have sent what is queued.
func (c *conn) waitWriter(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		c.mu.Lock()
		w := c.writing
		c.mu.Unlock()
		if !w {
			return
		}
	}
}

// cleanup releases everything of a closed connection.
func (c *conn) cleanup() {
	c.kill()
	if c.expTimer != nil {
		c.expTimer.Stop()
	}
	c.subMu.Lock()
	subs := c.subs
	c.subs = nil
	c.subMu.Unlock()
	for _, ch := range subs {
		c.b.hub.leave(ch, c)
		c.b.session.leave(ch.name, c)
	}
	c.b.unregister(c)
}

// handle processes one decoded frame (or decoding error); it returns false
// to stop processing the rest of the message.
func (c *conn) handle(fr *heraldv1.ClientFrame, derr *requestError) bool {
	if c.isClosing() {
		return false
	}
	if derr != nil {
		var id uint32
		if fr != nil {
			id = fr.Id
		}
		if !c.authed.Load() {
			c.closeWith(CloseBadFrame, derr.msg, false, 0)
			return false
		}
		c.badCount++
		if c.badCount > 16 {
			c.closeWith(CloseBadFrame, "too many malformed frames", false, 0)
			return false
		}
		c.sendError(id, derr)
		return true
	}
	if !c.authed.Load() {
		cf, ok := fr.Body.(*heraldv1.ClientFrame_Connect)
		if !ok {
			c.closeWith(CloseBadFrame, "the first frame must be connect", false, 0)
			return false
		}
		return c.connect(fr.Id, cf.Connect)
	}
	if !c.limiter.Allow() {
		c.strikes++
		if c.strikes > 4*int(max(c.b.cfg.RequestRate, 1)) {
			c.closeWith(CloseRateLimited, "request rate limit exceeded repeatedly", true, 1000)
			return false
		}
		metricRateLimited.WithLabelValues("request_rate").Inc()
		c.sendError(fr.Id, reqErr(ErrRateLimited, "too many requests: the limit is %g per second", c.b.cfg.RequestRate))
		return true
	}
	c.strikes = 0
	var (
		reply *heraldv1.ServerFrame
		err   error
	)
	switch body := fr.Body.(type) {
	case *heraldv1.ClientFrame_Connect:
		err = reqErr(ErrAlreadyConnected, "already connected")
	case *heraldv1.ClientFrame_Refresh:
		reply, err = c.refresh(body.Refresh)
	case *heraldv1.ClientFrame_Subscribe:
		// The reply is queued by subscribe itself, in order with the
		// replayed publications.
		err = c.subscribe(fr.Id, body.Subscribe.Channel, body.Subscribe.Since)
	case *heraldv1.ClientFrame_Unsubscribe:
		reply, err = c.unsubscribe(body.Unsubscribe.Channel)
	case *heraldv1.ClientFrame_Publish:
		reply, err = c.publish(body.Publish)
	case *heraldv1.ClientFrame_History:
		reply, err = c.history(body.History)
	case *heraldv1.ClientFrame_Presence:
		reply, err = c.presence(body.Presence.Channel)
	case *heraldv1.ClientFrame_PresenceStats:
		reply, err = c.presenceStats(body.PresenceStats.Channel)
	case *heraldv1.ClientFrame_Ping:
		reply = &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Pong{Pong: &heraldv1.PingFrame{}}}
	}
	var ce *closeError
	switch {
	case errors.As(err, &ce):
		c.closeWith(ce.code, ce.reason, false, 0)
		return false
	case err != nil:
		c.sendError(fr.Id, fromStatus(err))
	case reply != nil:
		reply.Id = fr.Id
		c.send(reply)
	}
	return true
}

// connect authenticates the connection.
func (c *conn) connect(reqID uint32, f *heraldv1.ConnectFrame) bool {
	var id *identity
	if f.Token == "" {
		if !c.b.anonymous {
			c.authFailed("missing_token", nil)
			c.closeWith(CloseInvalidToken, "a token is required", false, 0)
			return false
		}
	} else {
		var err error
		id, err = c.b.verifier.verify(f.Token)
		if errors.Is(err, jwt.ErrTokenExpired) {
			c.authFailed("expired_token", nil)
			c.closeWith(CloseTokenExpired, "token expired", true, 0)
			return false
		}
		if err != nil {
			c.authFailed("invalid_token", err)
			c.closeWith(CloseInvalidToken, err.Error(), false, 0)
			return false
		}
	}
	c.ident = id
	if id != nil {
		c.user = id.user
		if !c.b.addUser(c) {
			c.closeWith(CloseTooManyConns, "too many connections for this user", true, 5000)
			return false
		}
		c.userAdded = true
	}
	c.limiter = rate.NewLimiter(rate.Limit(c.b.cfg.RequestRate), 4*int(max(c.b.cfg.RequestRate, 1)))
	c.authed.Store(true)
	c.authOK()
	_ = c.ws.SetReadDeadline(time.Time{})
	connected := &heraldv1.ConnectedFrame{
		Client:       c.id,
		User:         c.user,
		Version:      c.b.version,
		PingInterval: uint32(c.b.cfg.PingInterval.D() / time.Second),
	}
	c.armExpiry(connected, nil)
	c.send(&heraldv1.ServerFrame{Id: reqID, Body: &heraldv1.ServerFrame_Connect{Connect: connected}})
	if c.user != "" {
		// With personal_since, the `subscribed` push says whether what was
		// published while the client was away is recovered, and it follows.
		if err := c.subscribe(0, "user:"+c.user, f.PersonalSince); err != nil {
			// Not a warning per connection when the core is unreachable or
			// refuses the bridge: that is logged once, elsewhere.
			level := slog.LevelWarn
			if fromStatus(err).code.temporary() {
				level = slog.LevelDebug
			}
			c.b.log.Log(context.Background(), level, "personal channel subscription failed", "user", c.user, "err", err)
			c.sendError(0, fromStatus(err))
		}
	}
	return true
}

// clientInfo returns the connection's presence identity, built on first
// use: most connections never join a presence namespace. It is called by
// request handling only (one message at a time), so it needs no lock.
func (c *conn) clientInfo() *heraldv1.ClientInfo {
	if c.info == nil {
		c.info = c.ident.clientInfo(c.id)
	}
	return c.info
}

// armExpiry (re)starts the timer closing the connection when its token
// expires, and fills expires_in.
func (c *conn) armExpiry(connected *heraldv1.ConnectedFrame, refreshed *heraldv1.RefreshedFrame) {
	if c.expTimer != nil {
		c.expTimer.Stop()
		c.expTimer = nil
	}
	if c.ident == nil || c.ident.expires.IsZero() {
		return
	}
	d := time.Until(c.ident.expires)
	secs := uint32(max(d, 0) / time.Second)
	if connected != nil {
		connected.ExpiresIn = max(secs, 1)
	}
	if refreshed != nil {
		refreshed.ExpiresIn = max(secs, 1)
	}
	c.expTimer = time.AfterFunc(d, func() {
		c.closeWith(CloseTokenExpired, "token expired; reconnect with a fresh token", true, 0)
	})
}

// refresh replaces the connection's token with one for the same user.
func (c *conn) refresh(f *heraldv1.RefreshFrame) (*heraldv1.ServerFrame, error) {
	if c.ident == nil {
		return nil, reqErr(ErrInvalidToken, "anonymous connections have no token to refresh")
	}
	id, err := c.b.verifier.verify(f.Token)
	if err != nil {
		return nil, reqErr(ErrInvalidToken, "%s", err.Error())
	}
	if id.user != c.ident.user {
		return nil, &closeError{CloseForbidden, "refresh token is for another user"}
	}
	id.info = c.ident.info // presence keeps the info the connection joined with
	c.ident = id
	out := &heraldv1.RefreshedFrame{}
	c.armExpiry(nil, out)
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Refresh{Refresh: out}}, nil
}
