package wsbridge_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/node"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// sseEvent is one event of an SSE stream.
type sseEvent struct {
	id, data string
	hasID    bool
	retry    int // -1: none
	frame    *heraldv1.ServerFrame
}

// streamClient reads an SSE stream or an HTTP stream (NDJSON or
// length-prefixed protobuf) and sends commands for its session.
type streamClient struct {
	t        testing.TB
	base     string // http://host:port
	resp     *http.Response
	br       *bufio.Reader
	sse      bool
	proto    bool
	cancel   context.CancelFunc
	events   []sseEvent // SSE: every event read, in order
	lastID   string     // SSE: the last id received (what EventSource keeps)
	comments int        // SSE heartbeats; HTTP stream: empty lines or frames
	buf      []*heraldv1.ServerFrame
	err      error
	token    string // the session token
	id       uint32
	frames   chan streamRead
}

type streamRead struct {
	ev  *sseEvent
	fr  *heraldv1.ServerFrame
	err error
}

func httpBase(n *node.Node) string { return "http://" + n.HTTPAddr.String() }

// openSSE opens /sse with query parameters and an optional Last-Event-ID.
func openSSE(t testing.TB, base string, q url.Values, lastID string) *streamClient {
	t.Helper()
	return openSSEHeader(t, base, q, lastID, nil)
}

// openSSEHeader is openSSE with request headers (cookies, say).
func openSSEHeader(t testing.TB, base string, q url.Values, lastID string, header http.Header) *streamClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/sse?"+q.Encode(), nil)
	for k, v := range header {
		req.Header[k] = v
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /sse: %v", err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		t.Fatalf("GET /sse: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	c := &streamClient{t: t, base: base, resp: resp, br: bufio.NewReaderSize(resp.Body, 64<<10), sse: true, cancel: cancel}
	c.start()
	t.Cleanup(c.close)
	return c
}

// openStream opens /stream with a body of frames (connect first).
func openStream(t testing.TB, base string, binary bool, frames ...*heraldv1.ClientFrame) *streamClient {
	t.Helper()
	return openStreamHeader(t, base, binary, nil, frames...)
}

// openStreamHeader is openStream with request headers (cookies, say).
func openStreamHeader(t testing.TB, base string, binary bool, header http.Header, frames ...*heraldv1.ClientFrame) *streamClient {
	t.Helper()
	return openStreamVia(t, http.DefaultClient, base, binary, header, frames...)
}

// openStreamVia is openStreamHeader with an HTTP client of the caller's
// (TLS, HTTP/2).
func openStreamVia(t testing.TB, hc *http.Client, base string, binary bool, header http.Header, frames ...*heraldv1.ClientFrame) *streamClient {
	t.Helper()
	c := &streamClient{t: t, base: base, proto: binary}
	body, ct := c.encode(frames...)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/stream", bytes.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", ct)
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("POST /stream: %v", err)
	}
	if resp.StatusCode != 200 {
		cancel()
		t.Fatalf("POST /stream: %s", resp.Status)
	}
	c.resp, c.br, c.cancel = resp, bufio.NewReaderSize(resp.Body, 64<<10), cancel
	c.start()
	t.Cleanup(c.close)
	return c
}

func (c *streamClient) close() {
	c.cancel()
	_ = c.resp.Body.Close()
}

// encode encodes client frames as one message of the client's format,
// giving each an id.
func (c *streamClient) encode(frames ...*heraldv1.ClientFrame) ([]byte, string) {
	var msg []byte
	for i, fr := range frames {
		if fr.Id == 0 {
			c.id++
			fr.Id = c.id
		}
		if c.proto {
			b, _ := proto.Marshal(fr)
			msg = append(protowire.AppendVarint(msg, uint64(len(b))), b...)
			continue
		}
		if i > 0 {
			msg = append(msg, '\n')
		}
		b, _ := protojson.Marshal(fr)
		msg = append(msg, b...)
	}
	if c.proto {
		return msg, "application/x-protobuf"
	}
	return msg, "application/json"
}

// start reads the stream in a goroutine, handing what it reads to the
// test through a channel.
func (c *streamClient) start() {
	c.frames = make(chan streamRead, 1024)
	go func() {
		defer close(c.frames)
		for {
			r := c.readOne()
			c.frames <- r
			if r.err != nil {
				return
			}
		}
	}()
}

func (c *streamClient) readOne() streamRead {
	switch {
	case c.sse:
		ev := sseEvent{retry: -1}
		var data []string
		for {
			line, err := c.br.ReadString('\n')
			if err != nil {
				return streamRead{err: err}
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if len(data) == 0 {
					continue // id-only or empty event
				}
				ev.data = strings.Join(data, "\n")
				fr := &heraldv1.ServerFrame{}
				if err := protojson.Unmarshal([]byte(ev.data), fr); err != nil {
					return streamRead{err: err}
				}
				ev.frame = fr
				return streamRead{ev: &ev, fr: fr}
			case strings.HasPrefix(line, ":"):
				return streamRead{ev: &sseEvent{data: ":"}}
			case strings.HasPrefix(line, "id: "):
				ev.id, ev.hasID = strings.TrimPrefix(line, "id: "), true
			case strings.HasPrefix(line, "data: "):
				data = append(data, strings.TrimPrefix(line, "data: "))
			case strings.HasPrefix(line, "retry: "):
				ev.retry, _ = strconv.Atoi(strings.TrimPrefix(line, "retry: "))
			default:
				return streamRead{err: io.ErrUnexpectedEOF}
			}
		}
	case c.proto:
		n, err := binaryUvarint(c.br)
		if err != nil {
			return streamRead{err: err}
		}
		if n == 0 {
			return streamRead{ev: &sseEvent{data: ":"}}
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(c.br, b); err != nil {
			return streamRead{err: err}
		}
		fr := &heraldv1.ServerFrame{}
		if err := proto.Unmarshal(b, fr); err != nil {
			return streamRead{err: err}
		}
		return streamRead{fr: fr}
	default:
		line, err := c.br.ReadBytes('\n')
		if err != nil {
			return streamRead{err: err}
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		if len(line) == 0 {
			return streamRead{ev: &sseEvent{data: ":"}}
		}
		fr := &heraldv1.ServerFrame{}
		if err := protojson.Unmarshal(line, fr); err != nil {
			return streamRead{err: err}
		}
		return streamRead{fr: fr}
	}
}

func binaryUvarint(br *bufio.Reader) (uint64, error) {
	var x uint64
	for s := uint(0); ; s += 7 {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		x |= uint64(b&0x7f) << s
		if b < 0x80 {
			return x, nil
		}
	}
}

// read takes one more frame into buf; false when the stream ended.
func (c *streamClient) read(timeout time.Duration) bool {
	c.t.Helper()
	if c.err != nil {
		return false
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case r, ok := <-c.frames:
			if !ok {
				c.err = io.EOF
				return false
			}
			if r.err != nil {
				c.err = r.err
				return false
			}
			if r.ev != nil && r.ev.data == ":" {
				c.comments++
				continue
			}
			if r.ev != nil {
				c.events = append(c.events, *r.ev)
				if r.ev.hasID {
					c.lastID = r.ev.id
				}
			}
			if cf := r.fr.GetConnect(); cf != nil && c.token == "" {
				c.token = cf.SessionToken
			}
			c.buf = append(c.buf, r.fr)
			return true
		case <-t.C:
			return false
		}
	}
}

// waitFor returns the first frame matching pred, reading as needed.
func (c *streamClient) waitFor(what string, pred func(*heraldv1.ServerFrame) bool) *heraldv1.ServerFrame {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for i, fr := range c.buf {
			if pred(fr) {
				c.buf = append(c.buf[:i], c.buf[i+1:]...)
				return fr
			}
		}
		if time.Now().After(deadline) || !c.read(time.Until(deadline)) {
			c.t.Fatalf("waiting for %s: %v (%d frames buffered: %v)", what, c.err, len(c.buf), c.buf)
		}
	}
}

// connected waits for the connect reply (or push) and returns it.
func (c *streamClient) connected() *heraldv1.ConnectedFrame {
	c.t.Helper()
	return c.waitFor("connect", func(f *heraldv1.ServerFrame) bool { return f.GetConnect() != nil }).GetConnect()
}

// command POSTs frames to base's /command with the session token and
// returns the HTTP status.
func (c *streamClient) command(base string, frames ...*heraldv1.ClientFrame) int {
	c.t.Helper()
	body, ct := c.encode(frames...)
	req, _ := http.NewRequest("POST", base+"/command", bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("POST /command: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// request sends one frame as a command to the session's own bridge and
// returns the reply from the stream.
func (c *streamClient) request(fr *heraldv1.ClientFrame) *heraldv1.ServerFrame {
	c.t.Helper()
	return c.requestVia(c.base, fr)
}

func (c *streamClient) requestVia(base string, fr *heraldv1.ClientFrame) *heraldv1.ServerFrame {
	c.t.Helper()
	if code := c.command(base, fr); code != http.StatusAccepted {
		c.t.Fatalf("POST /command: %d", code)
	}
	id := fr.Id
	return c.waitFor("reply", func(r *heraldv1.ServerFrame) bool { return r.Id == id })
}

func (c *streamClient) nextPub(channel string) *heraldv1.Publication {
	c.t.Helper()
	return c.waitFor("publication in "+channel, func(f *heraldv1.ServerFrame) bool { return f.GetPub().GetChannel() == channel }).GetPub()
}

// expectEnd reads until the stream ends and returns its disconnect frame.
func (c *streamClient) expectEnd(code int) *heraldv1.DisconnectFrame {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.read(time.Until(deadline)) {
	}
	if c.err == nil {
		c.t.Fatalf("the stream did not end within 10s")
	}
	for i := len(c.buf) - 1; i >= 0; i-- {
		if d := c.buf[i].GetDisconnect(); d != nil {
			if int(d.Code) != code {
				c.t.Fatalf("disconnect code %d, want %d (%s)", d.Code, code, d.Reason)
			}
			return d
		}
	}
	c.t.Fatalf("the stream ended (%v) without a disconnect frame; want %d", c.err, code)
	return nil
}

// rawSSE opens /sse for user on channel over a raw socket, reads until the
// subscribed event, and returns the socket and its reader: no client
// goroutine, and nothing more is read unless the test does.
func rawSSE(t testing.TB, n *node.Node, user, channel string) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", n.HTTPAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	fmt.Fprintf(nc, "GET /sse?token=%s&channel=%s HTTP/1.1\r\nHost: %s\r\n\r\n", token(t, user, time.Hour, nil), channel, n.HTTPAddr)
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	want := `"subscribed":{"channel":"` + channel + `"`
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("SSE for %s: %v", user, err)
		}
		// protojson may put spaces between tokens: match without them.
		if strings.Contains(strings.ReplaceAll(line, " ", ""), want) {
			return nc, br
		}
	}
}
