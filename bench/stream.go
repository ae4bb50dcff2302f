package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// streamConn is a client of the SSE or HTTP-streaming transport: an HTTP
// request on a raw connection whose response body is read line by line.
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
	var req string
	if sse {
		q := url.Values{"name": {"herald-bench"}}
		if token != "" {
			q.Set("token", token)
		}
		if !g.spec.Personal {
			q.Set("channel", channel)
		}
		req = "GET " + sibling(u.Path, "sse") + "?" + q.Encode() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nAccept: text/event-stream\r\n\r\n"
	} else {
		tok, _ := json.Marshal(token)
		body := `{"id":1,"connect":{"token":` + string(tok) + `,"name":"herald-bench"}}`
		if !g.spec.Personal {
			ch, _ := json.Marshal(channel)
			body += "\n" + `{"id":2,"subscribe":{"channel":` + string(ch) + `}}`
		}
		req = fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", sibling(u.Path, "stream"), u.Host, len(body), body)
	}
	if g.tlsErr != nil {
		return nil, g.tlsErr
	}
	nc, err := nd.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %v", u.Host, err)
	}
	if g.tls != nil {
		cfg := g.tls.Clone()
		cfg.ServerName = u.Hostname()
		cfg.NextProtos = []string{"http/1.1"} // the request is written by hand, in HTTP/1.1
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %v", u.Host, err)
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
	if _, err := nc.Write([]byte(req)); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, g.spec.ReadBuf)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("response: %w", err)
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
