package wsbridge

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// discardConn is a net.Conn that swallows writes and never returns reads.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (discardConn) Read(p []byte) (int, error)       { select {} }
func (discardConn) Close() error                     { return nil }
func (discardConn) SetDeadline(time.Time) error      { return nil }
func (discardConn) SetReadDeadline(time.Time) error  { return nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }
func (discardConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// hijacker lets gorilla's Upgrader produce a real *websocket.Conn on a
// discardConn.
type hijacker struct{ *httptest.ResponseRecorder }

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := discardConn{}
	return c, bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c)), nil
}

func benchSession(b testing.TB, br *Bridge, f format) *session {
	r := httptest.NewRequest("GET", "/ws", nil)
	r.Header.Set("Connection", "upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-Websocket-Version", "13")
	r.Header.Set("Sec-Websocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if f == formatProto {
		r.Header.Set("Sec-Websocket-Protocol", SubprotocolProto)
	}
	ws, err := br.upgrader.Upgrade(hijacker{httptest.NewRecorder()}, r, nil)
	if err != nil {
		b.Fatal(err)
	}
	return (&wsConn{}).start(br, ws.NetConn(), ws.Subprotocol(), &credentials{})
}

var _ http.Hijacker = hijacker{}

// BenchmarkFanout measures one publication delivered to N subscribers of a
// channel, half on each subprotocol, through the whole path: shared
// encoding, the transports' queues, the on-demand writer and the
// WebSocket framing (to a socket that discards). allocs/op is per publication; the goal is that it
// does not grow with N (0 allocations per delivery).
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cfg := config.Default()
			cfg.Bridge.QueueFrames = 1 << 20
			cfg.Bridge.QueueBytes = 1 << 30
			br := &Bridge{cfg: cfg.Bridge, log: slog.New(slog.DiscardHandler)}
			br.ctx, br.cancel = context.WithCancel(context.Background())
			br.upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 16 << 10, WriteBufferPool: &writeBufferPool, Subprotocols: []string{SubprotocolJSON, SubprotocolProto}}
			ns := config.DefaultNamespace("chat")
			ch := &channel{h: &hub{b: br}, name: "chat:bench", ns: &ns}
			sessions := make([]*session, n)
			for i := range sessions {
				sessions[i] = benchSession(b, br, format(i%2))
				ch.addSubLocked(sessions[i], &sub{live: true}) // as joins do: /1 is a personal channel's path
			}
			payload := []byte(`{"text":"0123456789012345678901234567890123456789012345"}`)
			idle := func() {
				for _, s := range sessions {
					for {
						s.t.mu.Lock()
						w := s.t.writing
						s.t.mu.Unlock()
						if !w {
							break
						}
						runtime.Gosched()
					}
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ch.deliver(&heraldv1.Publication{Channel: ch.name, Offset: uint64(i + 1), Epoch: "e", Payload: &heraldv1.Publication_RawJson{RawJson: payload}})
				idle()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
			br.wg.Wait()
		})
	}
}

// streamSession is a session on an SSE or HTTP-stream transport writing
// to a socket that discards.
func streamSession(br *Bridge, kind transportKind, f format, channel string) *session {
	c := &httpConn{nc: discardConn{}}
	c.init(br, c, kind, f)
	if kind == transportSSE {
		c.sse = newSSEIDs([]string{channel})
		c.sse.resume("", "")
	}
	return newSession(br, &c.transport, &credentials{})
}

// BenchmarkFanoutTransports is BenchmarkFanout on each transport (1000
// subscribers): on SSE every event also carries the stream's resume id,
// built in the writer's pooled buffer.
func BenchmarkFanoutTransports(b *testing.B) {
	const n = 1000
	for _, tc := range []struct {
		name string
		kind transportKind
		f    format
	}{{"websocket", transportWebSocket, formatJSON}, {"sse", transportSSE, formatJSON}, {"http_stream", transportHTTPStream, formatJSON}, {"http_stream_proto", transportHTTPStream, formatProto}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := config.Default()
			cfg.Bridge.QueueFrames = 1 << 20
			cfg.Bridge.QueueBytes = 1 << 30
			br := &Bridge{cfg: cfg.Bridge, log: slog.New(slog.DiscardHandler)}
			br.ctx, br.cancel = context.WithCancel(context.Background())
			br.upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 16 << 10, WriteBufferPool: &writeBufferPool, Subprotocols: []string{SubprotocolJSON, SubprotocolProto}}
			ns := config.DefaultNamespace("chat")
			ch := &channel{h: &hub{b: br}, name: "chat:bench", ns: &ns, subs: make(map[*session]*sub, n)}
			sessions := make([]*session, n)
			for i := range sessions {
				if tc.kind == transportWebSocket {
					sessions[i] = benchSession(b, br, tc.f)
				} else {
					sessions[i] = streamSession(br, tc.kind, tc.f, ch.name)
				}
				ch.subs[sessions[i]] = &sub{live: true}
			}
			payload := []byte(`{"text":"0123456789012345678901234567890123456789012345"}`)
			idle := func() {
				for _, s := range sessions {
					for {
						s.t.mu.Lock()
						w := s.t.writing
						s.t.mu.Unlock()
						if !w {
							break
						}
						runtime.Gosched()
					}
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ch.deliver(&heraldv1.Publication{Channel: ch.name, Offset: uint64(i + 1), Epoch: "e", Payload: &heraldv1.Publication_RawJson{RawJson: payload}})
				idle()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
			br.wg.Wait()
		})
	}
}
