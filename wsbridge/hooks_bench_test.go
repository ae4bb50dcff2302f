package wsbridge_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/internal/hooktest"
	"github.com/herald-io/herald/node"
)

// BenchmarkHookLatency measures what a hook adds to a connect and to a
// publish, against a real backend on loopback in the same process
// (internal/hooktest, answering at once): the round trip of a WebSocket
// dial plus connect (with a JWT, no hook; with the session cookie, the
// connect hook over gRPC and over HTTP), and of a publish request and its
// reply on an open connection (a namespace without hooks; the same
// options with publish_hook). ns/op is one round trip; the differences are
// the hooks' cost. BENCHMARKS.md has the figures and the command.
func BenchmarkHookLatency(b *testing.B) {
	s := hooktest.Start(b, hooktest.Options{})
	cookie := s.Login("ann")
	nodes := map[string]*node.Node{}
	for _, form := range hookForms {
		cfg := hookConfig(s, form)
		plain := config.DefaultNamespace("plain")
		plain.AllowPublish = true
		cfg.Namespaces = append(cfg.Namespaces, plain)
		cfg.Bridge.RequestRate, cfg.Bridge.MaxConnsPerUser = 1e6, 1e6 // measure the round trips, not the limits
		nodes[form] = startNode(b, cfg, node.Serve)
	}
	tok := token(b, "jo", time.Hour, nil)

	dialConnect := func(b *testing.B, n *node.Node, h http.Header, connect string) *websocket.Conn {
		ws, _, err := websocket.DefaultDialer.Dial(wsURL(n), h)
		if err != nil {
			b.Fatal(err)
		}
		if err := ws.WriteMessage(websocket.TextMessage, []byte(connect)); err != nil {
			b.Fatal(err)
		}
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				b.Fatal(err)
			}
			if len(msg) > 8 && string(msg[:8]) == `{"id":1,` {
				return ws
			}
		}
	}
	connects := []struct {
		name, form string
		h          http.Header
		frame      string
	}{
		{"connect/jwt", "grpc", nil, `{"id":1,"connect":{"token":"` + tok + `"}}`},
		{"connect/hook-grpc", "grpc", http.Header{"Cookie": {"session=" + cookie}}, `{"id":1,"connect":{}}`},
		{"connect/hook-http", "http", http.Header{"Cookie": {"session=" + cookie}}, `{"id":1,"connect":{}}`},
	}
	for _, c := range connects {
		b.Run(c.name, func(b *testing.B) {
			n := nodes[c.form]
			for b.Loop() {
				ws := dialConnect(b, n, c.h, c.frame)
				_ = ws.Close()
			}
		})
	}
	publishes := []struct {
		name, form, channel string
	}{
		{"publish/no-hook", "grpc", "plain:bench"},
		{"publish/hook-grpc", "grpc", "room:bench"},
		{"publish/hook-http", "http", "room:bench"},
	}
	for _, p := range publishes {
		b.Run(p.name, func(b *testing.B) {
			ws := dialConnect(b, nodes[p.form], http.Header{"Cookie": {"session=" + cookie}}, `{"id":1,"connect":{}}`)
			defer ws.Close()
			c := &client{t: b, ws: ws}
			id := uint32(1)
			for b.Loop() {
				id++
				fr := publishJSON(p.channel, `{"text":"hi"}`)
				fr.Id = id
				if r := c.request(fr); r.GetPublish() == nil {
					b.Fatalf("publish: %v", r)
				}
				c.buf = c.buf[:0] // pushes (presence, subscribed) are not read
			}
		})
	}
}
