package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/herald-io/herald/node"
)

// TestRedisNodesGRPCAndBrowser runs three nodes on one real Redis: a
// publication accepted by node A reaches a gRPC subscriber on node B and a
// browser WebSocket on node C, in order; a browser that drops from C and
// comes back on B gets exactly what it missed.
func TestRedisNodesGRPCAndBrowser(t *testing.T) {
	r := redistest.Start(t)
	prefix := fmt.Sprintf("t%d", time.Now().UnixNano())
	nodes := make([]*node.Node, 3)
	for i := range nodes {
		nodes[i] = startNode(t, func(c *config.Config) {
			c.Engine = "redis"
			c.Redis.Addrs = []string{r.Addr}
			c.Redis.Prefix = prefix
		})
	}
	a, b, c := nodes[0], nodes[1], nodes[2]

	stream, err := grpcClient(t, b).Subscribe(context.Background(), &heraldv1.SubscribeRequest{
		Channel: "chat:multi", PayloadFormat: heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	ws := dialWS(t, c)
	ws.request(t, `{"id":1,"connect":{}}`, "connect")
	ws.request(t, `{"id":2,"subscribe":{"channel":"chat:multi"}}`, "subscribe")

	pubA := grpcClient(t, a)
	const n = 20
	var epoch string
	for i := 1; i <= n; i++ {
		resp, err := pubA.Publish(context.Background(), &heraldv1.PublishRequest{
			Channel: "chat:multi", Payload: &heraldv1.PublishRequest_RawJson{RawJson: []byte(fmt.Sprintf(`{"i":%d}`, i))},
		})
		if err != nil {
			t.Fatal(err)
		}
		epoch = resp.Position.Epoch
	}
	for i := 1; i <= n; i++ {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if p := ev.GetPublication(); p.Offset != uint64(i) || string(p.GetRawJson()) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("gRPC subscriber on B: %v, want offset %d", ev, i)
		}
	}
	for i := 1; i <= n; i++ {
		if p := ws.pub(t); p.Offset != fmt.Sprint(i) || p.Data["i"] != float64(i) {
			t.Fatalf("browser on C: %+v, want offset %d", p, i)
		}
	}

	// The browser drops; more is published on A; it resumes on node B.
	_ = ws.conn.Close()
	for i := n + 1; i <= n+5; i++ {
		if _, err := pubA.Publish(context.Background(), &heraldv1.PublishRequest{
			Channel: "chat:multi", Payload: &heraldv1.PublishRequest_RawJson{RawJson: []byte(fmt.Sprintf(`{"i":%d}`, i))},
		}); err != nil {
			t.Fatal(err)
		}
	}
	ws = dialWS(t, b)
	ws.request(t, `{"id":1,"connect":{}}`, "connect")
	reply := ws.request(t, fmt.Sprintf(`{"id":2,"subscribe":{"channel":"chat:multi","since":{"offset":"%d","epoch":%q}}}`, n, epoch), "subscribe")
	if !strings.Contains(reply, `"recovered":true`) {
		t.Fatalf("resume on B: %s", reply)
	}
	for i := n + 1; i <= n+5; i++ {
		if p := ws.pub(t); p.Offset != fmt.Sprint(i) {
			t.Fatalf("resumed browser: offset %s, want %d", p.Offset, i)
		}
	}
}

type wsClient struct {
	conn    *websocket.Conn
	pending []string
}

func dialWS(t *testing.T, n *node.Node) *wsClient {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"herald.json"}}
	conn, _, err := d.Dial("ws://"+n.HTTPAddr.String()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &wsClient{conn: conn}
}

// frame returns the next frame, splitting packed messages.
func (w *wsClient) frame(t *testing.T) string {
	t.Helper()
	for len(w.pending) == 0 {
		_ = w.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, msg, err := w.conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(msg), "\n") {
			if line != "" {
				// protojson varies its spacing on purpose: compact it,
				// so that tests can match text.
				var b bytes.Buffer
				if json.Compact(&b, []byte(line)) == nil {
					line = b.String()
				}
				w.pending = append(w.pending, line)
			}
		}
	}
	f := w.pending[0]
	w.pending = w.pending[1:]
	return f
}

// request sends a frame and returns the reply carrying kind, skipping
// pushes.
func (w *wsClient) request(t *testing.T, frame, kind string) string {
	t.Helper()
	if err := w.conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	for {
		f := w.frame(t)
		if strings.Contains(f, `"error"`) {
			t.Fatalf("%s: %s", frame, f)
		}
		if strings.HasPrefix(f, `{"id":`) && strings.Contains(f, `"`+kind+`"`) {
			return f
		}
	}
}

type wsPub struct {
	Offset string         `json:"offset"`
	Epoch  string         `json:"epoch"`
	Data   map[string]any `json:"data"`
}

// pub returns the next publication push, skipping other pushes.
func (w *wsClient) pub(t *testing.T) wsPub {
	t.Helper()
	for {
		var f struct {
			Pub *wsPub `json:"pub"`
		}
		raw := w.frame(t)
		if err := json.Unmarshal([]byte(raw), &f); err != nil {
			t.Fatalf("%v: %s", err, raw)
		}
		if f.Pub != nil {
			return *f.Pub
		}
	}
}
