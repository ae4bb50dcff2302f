package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http2"
)

// streamConn is a client of the SSE or HTTP-streaming transport: an HTTP
// request on a connection of its own (HTTP/1.1 written by hand, or one
// HTTP/2 stream with -h2) whose response body is read line by line.
type streamConn struct {
	nc  net.Conn
	br  *bufio.Reader
	sse bool
}

// streamHandshake opens client i on /sse or /stream beside its -ws URL,
// with its token, and returns once its channel is subscribed.
func (g *group) streamHandshake(ctx context.Context, i int, nd *net.Dialer) (*client, error) {
	u, err := url.Parse(g.spec.WS[i%len(g.spec.WS)])
	if err != nil {
		return nil, err
	}
	token, err := g.token(i)
	if err != nil {
		return nil, err
	}
	channel := g.spec.channelOf(i)
	sse := g.spec.Transport == "sse"
	var method, target, ctype, body string
	if sse {
		q := url.Values{"name": {"herald-bench"}}
		if token != "" {
			q.Set("token", token)
		}
		if !g.spec.Personal {
			q.Set("channel", channel)
		}
		method, target = "GET", sibling(u.Path, "sse")+"?"+q.Encode()
	} else {
		tok, _ := json.Marshal(token)
		body = `{"id":1,"connect":{"token":` + string(tok) + `,"name":"herald-bench"}}`
		if !g.spec.Personal {
			ch, _ := json.Marshal(channel)
			body += "\n" + `{"id":2,"subscribe":{"channel":` + string(ch) + `}}`
		}
		method, target, ctype = "POST", sibling(u.Path, "stream"), "application/json"
	}
	if g.tlsErr != nil {
		return nil, g.tlsErr
	}
	nc, err := nd.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %v", u.Host, err)
	}
	proto := "http/1.1" // the request is written by hand, in HTTP/1.1
	if g.spec.H2 {
		proto = "h2"
	}
	if g.tls != nil {
		cfg := g.tls.Clone()
		cfg.ServerName = u.Hostname()
		cfg.NextProtos = []string{proto}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %v", u.Host, err)
		}
		if got := tc.ConnectionState().NegotiatedProtocol; got != proto {
			tc.Close()
			return nil, fmt.Errorf("TLS with %s: the server chose protocol %q, not %q", u.Host, got, proto)
		}
		nc = tc
	}
	ok := false
	defer func() {
		if !ok {
			nc.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		nc.SetDeadline(dl)
	}
	var resp *http.Response
	var br *bufio.Reader
	if g.spec.H2 {
		// One connection a client, with one stream, as each browser has.
		cc, err := new(http2.Transport).NewClientConn(nc)
		if err != nil {
			return nil, fmt.Errorf("HTTP/2: %v", err)
		}
		var rb io.Reader
		if body != "" {
			rb = strings.NewReader(body)
		}
		// Not ctx: it ends with the handshake, and the stream with it.
		req, err := http.NewRequestWithContext(context.Background(), method, "https://"+u.Host+target, rb)
		if err != nil {
			return nil, err
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if sse {
			req.Header.Set("Accept", "text/event-stream")
		}
		if resp, err = cc.RoundTrip(req); err != nil {
			return nil, fmt.Errorf("HTTP/2 request: %v", err)
		}
		br = bufio.NewReaderSize(resp.Body, g.spec.ReadBuf)
	} else {
		req := method + " " + target + " HTTP/1.1\r\nHost: " + u.Host + "\r\n"
		if sse {
			req += "Accept: text/event-stream\r\n"
		}
		if ctype != "" {
			req += fmt.Sprintf("Content-Type: %s\r\nContent-Length: %d\r\n", ctype, len(body))
		}
		if _, err := nc.Write([]byte(req + "\r\n" + body)); err != nil {
			return nil, err
		}
		br = bufio.NewReaderSize(nc, g.spec.ReadBuf)
		if resp, err = http.ReadResponse(br, nil); err != nil {
			return nil, fmt.Errorf("response: %w", err)
		}
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	sc := &streamConn{nc: nc, br: br, sse: sse}
	push := sse || g.spec.Personal // the channel is subscribed at connect: a `subscribed` push
	for {
		fr, err := sc.frame()
		if err != nil {
			return nil, fmt.Errorf("handshake: %w", err)
		}
		var f serverFrame
		if len(fr) == 0 || json.Unmarshal(fr, &f) != nil {
			continue
		}
		switch {
		case f.Error != nil:
			return nil, fmt.Errorf("request %d: error %d: %s", f.ID, f.Error.Code, f.Error.Message)
		case f.Disconnect != nil:
			return nil, fmt.Errorf("disconnected: %d %s", f.Disconnect.Code, f.Disconnect.Reason)
		}
		if push && f.Subscribed != nil && f.Subscribed.Channel == channel || !push && f.ID == 2 && f.Subscribe != nil {
			break
		}
	}
	nc.SetDeadline(time.Time{})
	ok = true
	return &client{idx: i, stream: sc}, nil
}

// sibling is the path of endpoint name beside a /ws path.
func sibling(wsPath, name string) string {
	if len(wsPath) >= 3 && wsPath[len(wsPath)-3:] == "/ws" {
		return wsPath[:len(wsPath)-2] + name
	}
	return "/" + name
}

// frame returns the next frame of the stream (nil for a heartbeat or an
// SSE line that is not data).
func (s *streamConn) frame() ([]byte, error) {
	line, err := s.br.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	line = bytes.TrimRight(line, "\r\n")
	if s.sse {
		d, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			return nil, nil
		}
		return d, nil
	}
	return line, nil
}

// streamReadLoop reads a stream client's frames until it ends, counting
// publications and their latency as readLoop does.
func (g *group) streamReadLoop(c *client) {
	defer g.wg.Done()
	defer c.gone.Store(true)
	sh := g.lat.shard(c.idx)
	for {
		fr, err := c.stream.frame()
		if err != nil {
			g.noteClose(c, err)
			return
		}
		if len(fr) == 0 {
			continue
		}
		now := time.Now().UnixNano()
		if bytes.HasPrefix(fr, pubPrefix) {
			sh.mu.Lock()
			ok := sh.record(now, fr)
			sh.mu.Unlock()
			if ok {
				c.received.Add(1)
				if off, ok := parseOffset(fr); ok {
					g.seq(c, off)
				}
			} else {
				g.foreign.Add(1)
			}
			continue
		}
		if isPresenceEvent(fr) {
			g.presence.Add(1)
			continue
		}
		c.received.Add(g.slowFrame(c, sh, now, append([]byte(nil), fr...)))
	}
}
