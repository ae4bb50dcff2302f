package wsbridge

import (
	"errors"
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
	// authed is true (user, info never change after that).
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

	lastSeen  atomic.Int64 // unix nanos of the last pong or message
	awaitPong atomic.Bool

	subMu sync.Mutex
	subs  map[string]*channel // channels this connection is subscribed to

	mu        sync.Mutex // guards the fields below; held briefly, never while taking another lock
	queue     [][]byte   // frames to send; shared bytes, never modified
	qbytes    int
	writing   bool // a writer goroutine is running
	ping      bool // the writer must send a ping
	closing   bool // no more frames are accepted; the writer sends a close after the queue
	closeCode CloseCode
	closeMsg  string
	dead      bool // the socket is closed
}

func newConn(b *Bridge, ws *websocket.Conn) *conn {
	c := &conn{b: b, ws: ws, id: randomID(8)}
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
		c.b.wg.Add(1)
		go c.writeLoop()
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
	if start {
		c.b.wg.Add(1)
		go c.writeLoop()
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
		c.b.wg.Add(1)
		go c.writeLoop()
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

var newline = []byte{'\n'}

// writeLoop sends what is queued, packed into as few messages as it can,
// until the queue is empty, and then ends.
func (c *conn) writeLoop() {
	defer c.b.wg.Done()
	for {
		c.mu.Lock()
		if c.dead || (len(c.queue) == 0 && !c.ping) {
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
		ping, closing := c.ping, c.closing
		c.ping = false
		code, msg := c.closeCode, c.closeMsg
		c.mu.Unlock()

		deadline := time.Now().Add(writeWait)
		var err error
		if ping {
			err = c.ws.WriteControl(websocket.PingMessage, nil, deadline)
		}
		if err == nil && len(bt.frames) > 0 {
			_ = c.ws.SetWriteDeadline(deadline)
			err = c.writeFrames(bt.frames)
		}
		clear(bt.frames)
		bt.frames = bt.frames[:0]
		batchPool.Put(bt)
		if err == nil && closing {
			err = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), closeReason(msg)), deadline)
			c.mu.Lock()
			c.dead = true // nothing more is written; the reader waits for the client's close
			c.mu.Unlock()
		}
		if err != nil {
			c.kill()
		}
	}
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

// writeFrames writes frames packed into messages of at most maxMessage
// bytes (a larger frame goes alone): JSON frames separated by "\n",
// protobuf frames already length-prefixed.
func (c *conn) writeFrames(frames [][]byte) error {
	for i := 0; i < len(frames); {
		w, err := c.ws.NextWriter(c.messageType())
		if err != nil {
			return err
		}
		size := 0
		for ; i < len(frames) && (size == 0 || size+len(frames[i]) < maxMessage); i++ {
			if size > 0 && c.format == formatJSON {
				if _, err := w.Write(newline); err != nil {
					return err
				}
			}
			if _, err := w.Write(frames[i]); err != nil {
				return err
			}
			size += len(frames[i]) + 1
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	return nil
}

// readLoop reads and handles the client's frames until the socket ends,
// then cleans up. It runs in its own goroutine, started after the HTTP
// handler has returned.
func (c *conn) readLoop() {
	defer c.b.wg.Done()
	defer c.cleanup()
	c.b.register(c)
	if c.b.closing.Load() {
		c.closeWith(CloseShutdown, "server shutting down; reconnect", true, 1000)
	}
	c.ws.SetReadLimit(int64(c.b.cfg.MaxFrame))
	_ = c.ws.SetReadDeadline(time.Now().Add(connectTimeout))
	c.ws.SetPongHandler(func(string) error { c.alive(); return nil })
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			var ne interface{ Timeout() bool }
			if !c.authed.Load() && errors.As(err, &ne) && ne.Timeout() {
				// No connect in time: the read deadline is spent; say why
				// and let the hard timer close the socket.
				c.closeWith(CloseInvalidToken, "no connect frame within 10s", false, 0)
				c.waitWriter(time.Second)
			}
			return
		}
		c.alive()
		if c.isClosing() {
			continue
		}
		decodeFrames(c.format, msg, c.handle)
	}
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
	for name, ch := range subs {
		c.b.hub.leave(ch, c)
		c.b.session.leave(name, c)
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
			c.closeWith(CloseInvalidToken, "a token is required", false, 0)
			return false
		}
	} else {
		var err error
		id, err = c.b.verifier.verify(f.Token)
		if errors.Is(err, jwt.ErrTokenExpired) {
			c.closeWith(CloseTokenExpired, "token expired", true, 0)
			return false
		}
		if err != nil {
			c.closeWith(CloseInvalidToken, err.Error(), false, 0)
			return false
		}
	}
	c.ident = id
	c.info = id.clientInfo(c.id)
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
		if err := c.subscribe(0, "user:"+c.user, nil); err != nil {
			c.b.log.Warn("personal channel subscription failed", "user", c.user, "err", err)
			c.sendError(0, fromStatus(err))
		}
	}
	return true
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
