package wsbridge

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
)

// wsConn is the WebSocket transport of one session. Gorilla's Upgrader
// answers the handshake; after it the bridge owns the socket, both ways:
// wsReader parses what the client sends (wsframe.go), and write frames
// everything the client receives (data messages, pings, pongs and the
// close frame) in the writer's pooled buffer. Nothing else reads or
// writes the socket, and gorilla's Conn is dropped after the upgrade (it
// would also answer close frames and protocol errors by itself, behind
// the bridge's writer).
type wsConn struct {
	transport
	nc net.Conn
	rd wsReader
	b2 [2]byte // reader-only: the first two bytes of the next frame

	awaitPong atomic.Bool // a ping was sent and nothing came back since
	connected bool        // reader-only: the connect deadline is lifted

	parking

	adm admission // given back when the connection ends
}

// parking is a connection's place in the poller (idlepoll_linux.go): rc
// is the socket's raw access (under TLS, of the socket below it), nil
// where the reader never parks; tls says nc is a *tls.Conn; pollID is the
// poller's id for the connection (0: never parked); parked is set while
// no reader runs. The reader role passes between goroutines through
// parked: whoever clears it (the poller, or cut) starts the next reader.
type parking struct {
	rc     syscall.RawConn
	pollID uint64
	parked atomic.Bool
	tls    bool
}

// errWouldBlock is readNow's answer when nothing has come.
var errWouldBlock = errors.New("would block")

// serveWebSocket upgrades a request to a WebSocket. The handler returns at
// once; the connection is read by a goroutine of its own, so that
// net/http's buffers and the handler's stack are not kept for the
// connection's life.
func (b *Bridge) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if b.closing.Load() {
		refuse(w, "shutting_down", http.StatusServiceUnavailable, retryStorm, "bridge shutting down; reconnect to another node")
		return
	}
	// Limits are checked before the upgrade: a refusal costs one response.
	adm, ok := b.lim.admit(w, r)
	if !ok {
		return
	}
	ws, err := b.upgrader.Upgrade(w, r, nil)
	if err != nil {
		adm.release()
		return // the upgrader has answered (403 for a refused origin, 400...)
	}
	b.nAccepted.Add(1)
	c := &wsConn{adm: adm}
	s := c.start(b, ws.NetConn(), ws.Subprotocol(), b.presented(transportWebSocket, r))
	b.log.Debug("connection opened", "conn", s.id, "transport", "websocket", "remote", r.RemoteAddr, "subprotocol", subprotocolNames[c.format])
	b.wg.Add(1)
	go func() {
		c.readSetup()
		c.readLoop(false)
	}()
}

// start makes the transport and session of an upgraded connection.
func (c *wsConn) start(b *Bridge, nc net.Conn, subprotocol string, creds *credentials) *session {
	f := formatJSON
	if subprotocol == SubprotocolProto {
		f = formatProto
	}
	c.init(b, c, transportWebSocket, f)
	c.nc = nc
	c.setup(nc)
	c.poolable = poolable(&c.transport, &c.parking, nc)
	c.rd = wsReader{r: nc, max: b.cfg.MaxFrame}
	metricConns[transportWebSocket][f].Add(1)
	return newSession(b, &c.transport, creds)
}

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opText   = 1
	opBinary = 2
	opClose  = 8
	opPing   = 9
	opPong   = 10
)

// write sends a batch: a ping and a pong first if due, then the frames
// packed into as few messages as maxMessage allows, then, for the last
// batch, the close frame; in one socket write per maxMessage bytes.
//
// Gorilla's NextWriter and WriteMessage would allocate per message (the
// writer object, the buffer pool's interface boxing), and a write
// deadline per write costs a timer update: the heartbeat cuts a write that
// does not end (stuckWrite), or closeGrace after a close.
func (c *wsConn) write(out []byte, bt *batch) ([]byte, error) {
	if bt.ping {
		out = appendFrameHeader(out, opPing, 0)
	}
	if bt.pong != nil {
		out = appendFrameHeader(out, opPong, len(bt.pong))
		out = append(out, bt.pong...)
	}
	var err error
	for frames := bt.frames; len(frames) > 0 && err == nil; {
		var n int
		out, n = c.appendMessage(out, frames)
		frames = frames[n:]
		if len(frames) > 0 {
			err = c.flushOut(out)
			out = out[:0]
		}
	}
	if bt.last {
		reason := closeReason(bt.reason)
		out = appendFrameHeader(out, opClose, 2+len(reason))
		out = append(out, byte(bt.code>>8), byte(bt.code))
		out = append(out, reason...)
	}
	if err == nil && len(out) > 0 {
		err = c.flushOut(out)
	}
	return out, err
}

// flushOut writes out (writePooled).
func (c *wsConn) flushOut(out []byte) error {
	return writePooled(&c.transport, &c.parking, c.nc, out)
}

// cut closes the socket; the reader then ends and cleans up (a parked
// connection gets a reader for that).
func (c *wsConn) cut() {
	_ = c.nc.Close()
	c.wake()
}

// wake starts a reader for the connection if it is parked.
func (c *wsConn) wake() {
	if c.parked.CompareAndSwap(true, false) {
		go c.readLoop(true)
	}
}

func (c *wsConn) missedPong() bool {
	if c.awaitPong.Load() {
		return true
	}
	c.awaitPong.Store(true)
	return false
}

// alive records that something came from the client.
func (c *wsConn) alive() { c.awaitPong.Store(false) }

// appendMessage appends one WebSocket message packing frames from the
// start of frames, as many as fit in maxMessage bytes (a larger frame goes
// alone), and returns how many it took: JSON frames separated by "\n",
// protobuf frames already length-prefixed.
func (c *wsConn) appendMessage(out []byte, frames []outFrame) ([]byte, int) {
	sep := 0
	op := byte(opBinary)
	if c.format == formatJSON {
		sep, op = 1, opText
	}
	size, n := 0, 0
	for ; n < len(frames); n++ {
		l := len(frames[n].b)
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
		out = append(out, f.b...)
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

// errStopReading ends the read loop once the session is closing for what
// the client sent (1002, 1003, 1007, 1009) or the client closed: the rest
// of its bytes are not read.
var errStopReading = errors.New("stop reading")

// readLoop reads and handles the client's frames until the socket ends,
// then cleans up. It runs in a goroutine of its own, started after the
// HTTP handler has returned. Once connected, a reader that finds nothing
// to read parks the connection and ends (idlepoll_linux.go); a new
// goroutine runs readLoop when the client sends more.
//
// A reader waiting for the next frame's first two bytes (before connect,
// or on a system without epoll) must keep its stack in use small: under ~1 KB, the reader
// fits Go's minimum 2 KB stack, and the runtime's starting stack size
// (the average in use at the last GC, plus a guard, rounded up) stays 2
// KB for every new goroutine. The loop therefore waits in the socket's
// Read one frame below the goroutine's entry, with no defers; setup, the
// rest of the frame and error handling are in functions of their own,
// and messages are handled by the session in a goroutine of their own.
// (Measured: one more frame of ~60 bytes between the goroutine's entry
// and the read raises the starting size to 4 KB.)
//
// woken is true for a reader started for a parked connection: the socket
// is readable (or closed), so it reads at once, blocking (under TLS a
// check without waiting would not read the socket, which would stay
// readable and wake the poller again and again).
func (c *wsConn) readLoop(woken bool) {
	var err error
	for {
		if woken {
			woken = false
			_, err = io.ReadFull(c.nc, c.b2[:])
		} else if c.connected && c.canPark() {
			var n int
			n, err = c.readNow(c.nc, c.b2[:])
			switch {
			case err == errWouldBlock:
				if c.park(c) {
					return
				}
				_, err = io.ReadFull(c.nc, c.b2[:])
			case err == nil && n == 1:
				_, err = io.ReadFull(c.nc, c.b2[1:])
			}
		} else {
			_, err = io.ReadFull(c.nc, c.b2[:])
		}
		if err != nil {
			break
		}
		if err = c.received(); err != nil {
			break
		}
	}
	c.readEnded(err)
	c.unpark()
	c.s.ended()
	c.b.wg.Done()
	metricConns[transportWebSocket][c.format].Add(-1)
	c.adm.release()
}

// readSetup registers the session and arms the connect deadline.
func (c *wsConn) readSetup() {
	c.s.start()
	_ = c.nc.SetReadDeadline(time.Now().Add(connectTimeout))
}

// readEnded handles the error that ended reading: a close the client
// started or answered, the bridge's refusal of what the client sent, the
// connect timeout, or a connection that is gone.
func (c *wsConn) readEnded(err error) {
	var we *wsError
	var ne net.Error
	switch {
	case errors.Is(err, errStopReading):
		c.waitWriter(time.Second) // the close frame goes out before the socket is cut
	case errors.As(err, &we):
		reconnect := we.code == CloseMessageTooBig
		c.s.closeWith(we.code, we.reason, reconnect, 0)
		c.waitWriter(time.Second)
	case !c.s.authed.Load() && errors.As(err, &ne) && ne.Timeout():
		// No connect in time: the read deadline is spent; say why.
		c.s.closeWith(CloseInvalidToken, "no connect frame within 10s", false, 0)
		c.waitWriter(time.Second)
	}
	// Otherwise the connection is gone.
}

// received reads the rest of a frame and handles it: a pong or any
// message shows the client alive; a ping is answered through the writer;
// a close is answered (unless the bridge started the close: then it is
// the answer); a complete message is checked and handled by the session.
func (c *wsConn) received() error {
	op, p, err := c.rd.frame(c.b2[0], c.b2[1])
	if err != nil {
		return err
	}
	c.alive()
	switch op {
	case 0: // a fragment
		return nil
	case opPong:
		return nil
	case opPing:
		c.sendPong(string(p))
		return nil
	case opClose:
		c.peerClosed(closeCodeOf(p))
		return errStopReading
	}
	if c.isClosing() {
		return nil
	}
	switch {
	case c.format == formatJSON && op != opText:
		c.s.closeWith(CloseUnsupportedData, "herald.json carries text messages; use herald.proto for binary frames", false, 0)
		return errStopReading
	case c.format == formatProto && op != opBinary:
		c.s.closeWith(CloseUnsupportedData, "herald.proto carries binary messages; use herald.json for text frames", false, 0)
		return errStopReading
	case c.format == formatJSON && !utf8.Valid(p):
		c.s.closeWith(CloseInvalidPayload, "text message is not valid UTF-8", false, 0)
		return errStopReading
	}
	c.s.process(p)
	if !c.connected && c.s.authed.Load() {
		c.connected = true
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	return nil
}

// peerClosed answers a close frame from the client. When the bridge
// started the close, the client's close frame is the answer and nothing
// more is sent; otherwise the bridge echoes the code (RFC 6455 5.5.1),
// after what is queued, without a DisconnectFrame: the client is leaving.
func (c *wsConn) peerClosed(code CloseCode) {
	if code == 1005 { // no status
		code = CloseNormal
	}
	c.close(code, "", nil, false, 0)
}
