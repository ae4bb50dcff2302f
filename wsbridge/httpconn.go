package wsbridge

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// httpConn is the transport of a session whose frames travel in an HTTP
// response body: SSE events (sse set) or an HTTP stream. It is the wire of
// both; only write differs.
//
// On HTTP/1.x the connection is hijacked once the response headers are
// written, as a WebSocket is: the handler returns, net/http keeps no
// buffer and no goroutine for it, the bridge writes the body itself
// (delimited by the connection's end), and a small reader goroutine
// notices when the client goes. On HTTP/2 a stream cannot be hijacked:
// the handler stays, writes go through the ResponseWriter, flushed each
// time, and the request's context says when the client went.
type httpConn struct {
	transport
	nc   net.Conn      // hijacked (HTTP/1.x); nil on HTTP/2
	h2   *h2Writer     // HTTP/2
	sse  *sseIDs       // SSE: the resume state of event ids; nil for HTTP streaming
	once sync.Once     // cut
	rbuf [8]byte       // reader-only (HTTP/1.x): what a client sends is discarded
	done chan struct{} // HTTP/2: closed by cut; the handler then returns

	parking           // HTTP/1.x: the reader parks (idlepoll_linux.go)
	adm     admission // HTTP/1.x: given back when the reader ends
}

// h2Writer writes an HTTP/2 response body, flushing each write.
type h2Writer struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (w *h2Writer) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err == nil {
		err = w.rc.Flush()
	}
	return n, err
}

// open sends the response headers (those already set on w, plus the
// stream's) and takes the connection: hijacked on HTTP/1.x. It answers
// the request itself when it cannot.
func (c *httpConn) open(w http.ResponseWriter, r *http.Request, contentType string) bool {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-cache, no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	h.Set("X-Content-Type-Options", "nosniff")
	if r.ProtoMajor >= 2 {
		rc := http.NewResponseController(w)
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			return false
		}
		c.h2 = &h2Writer{w: w, rc: rc}
		c.done = make(chan struct{})
		return true
	}
	nc, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "streaming needs a connection the server can hold", http.StatusInternalServerError)
		return false
	}
	h.Set("Connection", "close")
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&head)
	head.WriteString("\r\n")
	_ = nc.SetDeadline(time.Time{})
	_ = nc.SetWriteDeadline(time.Now().Add(writeWait))
	_, err = nc.Write(head.Bytes())
	_ = nc.SetWriteDeadline(time.Time{})
	if err != nil {
		_ = nc.Close()
		return false
	}
	c.hold(nc)
	return true
}

// hold makes nc, hijacked with the response's head written, the stream's
// connection.
func (c *httpConn) hold(nc net.Conn) {
	c.nc = nc
	c.setup(nc)
	c.poolable = poolable(&c.transport, &c.parking, nc)
}

// serve holds the stream once the session has started: on HTTP/1.x a
// reader (parked while the client sends nothing) notices when the client
// goes and the handler returns at once; on HTTP/2 the handler waits for the end itself. adm is released
// when the session has ended.
func (c *httpConn) serve(r *http.Request, adm admission) {
	c.adm = adm
	if c.nc != nil {
		c.b.wg.Add(1)
		go c.readLoop(false)
		return
	}
	select {
	case <-c.done:
	case <-r.Context().Done():
	}
	c.kill()
	// The handler must not return while the writer may still write to the
	// ResponseWriter; cut set a past write deadline, so its write ends.
	for {
		c.mu.Lock()
		w := c.writing
		c.mu.Unlock()
		if !w {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.end()
}

// end cleans up after the session, once the stream is over.
func (c *httpConn) end() {
	c.s.ended()
	metricConns[c.kind][c.format].Add(-1)
	c.adm.release()
}

// readLoop reads until the client closes the connection (or it is cut),
// then cleans up. A client sends nothing after its request; whatever
// comes is discarded. A reader that finds nothing to read parks the
// connection and ends; one woken by the poller (or cut) reads blocking
// first (see wsConn.readLoop).
func (c *httpConn) readLoop(woken bool) {
	var err error
	for err == nil {
		if !woken && c.canPark() {
			if _, err = c.readNow(c.nc, c.rbuf[:]); err == errWouldBlock {
				if c.park(c) {
					return
				}
				err = nil
				woken = true // read blocking: it could not park
			}
			continue
		}
		woken = false
		_, err = c.nc.Read(c.rbuf[:])
	}
	c.unpark()
	c.end()
	c.b.wg.Done()
}

// wake starts a reader for the connection if it is parked.
func (c *httpConn) wake() {
	if c.parked.CompareAndSwap(true, false) {
		go c.readLoop(true)
	}
}

// out is where the stream's bytes go.
func (c *httpConn) writeOutTo(b []byte) error {
	if c.nc != nil {
		return writePooled(&c.transport, &c.parking, c.nc, b)
	}
	return c.writeOut(c.h2, b)
}

func (c *httpConn) cut() {
	c.once.Do(func() {
		if c.nc != nil {
			_ = c.nc.Close()
			c.wake()
			return
		}
		_ = c.h2.rc.SetWriteDeadline(time.Now())
		close(c.done)
	})
}

// endStream ends the response after the last batch: on HTTP/1.x the
// write side is closed (the client sees the body end, answers by closing,
// and the reader then cleans up; closeGrace cuts a client that does not);
// on HTTP/2 the handler returns, which ends the stream.
func (c *httpConn) endStream() {
	if c.nc == nil {
		// No past write deadline here (cut's): it would reset the stream,
		// and HTTP/2 drops the frames not yet on the wire with it.
		c.once.Do(func() { close(c.done) })
		return
	}
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	c.cut()
}

func (c *httpConn) missedPong() bool { return false }

func (c *httpConn) write(out []byte, bt *batch) ([]byte, error) {
	var err error
	if c.sse != nil {
		out, err = c.writeSSE(out, bt)
	} else {
		out, err = c.writeStream(out, bt)
	}
	if err == nil && bt.last {
		c.endStream()
	}
	return out, err
}

// writeStream writes an HTTP stream's batch: each JSON frame on a line of
// its own (NDJSON), protobuf frames each after its varint length (as they
// are encoded); a heartbeat is an empty line, or a zero-length frame.
func (c *httpConn) writeStream(out []byte, bt *batch) ([]byte, error) {
	json := c.format == formatJSON
	if bt.ping {
		if json {
			out = append(out, '\n')
		} else {
			out = append(out, 0)
		}
	}
	for _, f := range bt.frames {
		if len(out) > 0 && len(out)+len(f.b) > maxMessage {
			if err := c.writeOutTo(out); err != nil {
				return out, err
			}
			out = out[:0]
		}
		out = append(out, f.b...)
		if json {
			out = append(out, '\n')
		}
	}
	if len(out) == 0 {
		return out, nil
	}
	return out, c.writeOutTo(out)
}

// writeSSE writes a batch as SSE events: each frame is an event whose data
// is the JSON frame (one line: frames never hold a newline); a frame that
// advances a channel the stream resumes carries, as its id, the positions
// of every such channel (sseid.go); a heartbeat is a comment line. The
// last batch advises the browser's reconnect through `retry:`.
func (c *httpConn) writeSSE(out []byte, bt *batch) ([]byte, error) {
	if bt.ping {
		out = append(out, ":\n"...)
	}
	appendRetry := func(out []byte) []byte {
		retry := uint32(noReconnectRetry)
		if bt.recon {
			retry = max(bt.delay, minSSERetry)
		}
		out = append(out, "retry: "...)
		out = strconv.AppendUint(out, uint64(retry), 10)
		return append(out, '\n')
	}
	if bt.last && len(bt.frames) == 0 {
		out = appendRetry(out)
	}
	for i, f := range bt.frames {
		if len(out) > 0 && len(out)+len(f.b) > maxMessage {
			if err := c.writeOutTo(out); err != nil {
				return out, err
			}
			out = out[:0]
		}
		if bt.last && i == len(bt.frames)-1 {
			// In the stream's last event (the disconnect), so that a
			// reader that reads fields per event finds it there too.
			out = appendRetry(out)
		}
		if f.pos != nil && c.sse.advance(f.pos) {
			out = append(out, "id: "...)
			out = c.sse.appendID(out)
			out = append(out, '\n')
		}
		out = append(out, "data: "...)
		out = append(out, f.b...)
		out = append(out, '\n', '\n')
	}
	if len(out) == 0 {
		return out, nil
	}
	return out, c.writeOutTo(out)
}

// SSE reconnect advice in a stream's last event, in ms: the bridge's
// reconnect_delay_ms when it asks the client to reconnect (at least
// minSSERetry), and an hour when it does not, so that an EventSource left
// open by a page that ignores the `disconnect` event does not hammer the
// bridge (the page should close it).
const (
	minSSERetry      = 500
	noReconnectRetry = 3600_000
)
