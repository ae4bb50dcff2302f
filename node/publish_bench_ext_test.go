package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// processCPU is this process's user and system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPublish is one backend publication delivered to one browser,
// through a whole `herald serve` node: a unary gRPC Publish on the
// listener, or a REST POST, then the core, the in-process link, the bridge
// and a WebSocket write. allocs/op and cpu-ns/op (the process's CPU
// time, less sensitive than ns/op to a machine shared with other work)
// count both ends: client and node share the process.
func BenchmarkPublish(b *testing.B) {
	n := startNode(b, nil)
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+n.HTTPAddr.String()+"/ws", http.Header{"Sec-WebSocket-Protocol": {"herald.json"}})
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	for _, f := range []string{`{"id":1,"connect":{}}`, `{"id":2,"subscribe":{"channel":"chat:bench"}}`} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
			b.Fatal(err)
		}
		if _, msg, err := ws.ReadMessage(); err != nil || bytes.Contains(msg, []byte(`"error"`)) {
			b.Fatalf("%s: %s, %v", f, msg, err)
		}
	}
	got := countPubs(ws)
	wait := func(want int64) {
		for end := time.Now().Add(30 * time.Second); got.Load() < want; time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				b.Fatalf("delivered %d of %d", got.Load(), want)
			}
		}
	}
	payload := []byte(`{"t":1732600000000000000,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	b.Run("grpc", func(b *testing.B) {
		client := grpcClient(b, n)
		ctx := context.Background()
		start := got.Load()
		b.ReportAllocs()
		cpu := processCPU()
		for b.Loop() {
			if _, err := client.Publish(ctx, &heraldv1.PublishRequest{Channel: "chat:bench", Payload: &heraldv1.PublishRequest_RawJson{RawJson: payload}}); err != nil {
				b.Fatal(err)
			}
		}
		wait(start + int64(b.N))
		b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	})
	b.Run("rest", func(b *testing.B) {
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		url := fmt.Sprintf("http://%s/v1/channels/chat:bench/publish", n.HTTPAddr)
		body := `{"data":` + string(payload) + `}`
		start := got.Load()
		b.ReportAllocs()
		cpu := processCPU()
		for b.Loop() {
			resp, err := hc.Post(url, "application/json", strings.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("HTTP %d: %s", resp.StatusCode, out)
			}
		}
		wait(start + int64(b.N))
		b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	})
}

// BenchmarkPublishNotification is the notification shape of issue 13 in
// one process: a node with an API key and a JWT secret, the bench's
// namespace options (history on, no presence), one browser connected as
// user "ann" on its personal channel user:ann, and a backend publishing
// to it with unary gRPC Publish calls presenting the key. allocs/op and
// cpu-ns/op count both ends, as in BenchmarkPublish.
func BenchmarkPublishNotification(b *testing.B) {
	const secret, key = "benchsecret0123456789", "benchkey0123456789"
	n := startNode(b, func(c *config.Config) {
		c.Bridge.JWTSecret = secret
		c.APIKeys = []config.APIKey{{Name: "backend", Key: key}}
		c.Namespaces = []config.Namespace{{Name: "user", HistorySize: 100, HistoryTTL: config.Duration(5 * time.Minute), AllowSubscribe: true}}
	})
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ann", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		b.Fatal(err)
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+n.HTTPAddr.String()+"/ws", http.Header{"Sec-WebSocket-Protocol": {"herald.json"}})
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{"token":"`+tok+`"}}`)); err != nil {
		b.Fatal(err)
	}
	for subscribed := false; !subscribed; {
		_, msg, err := ws.ReadMessage()
		if err != nil || bytes.Contains(msg, []byte(`"error"`)) {
			b.Fatalf("connect: %s, %v", msg, err)
		}
		subscribed = bytes.Contains(msg, []byte(`"subscribed"`)) && bytes.Contains(msg, []byte(`"user:ann"`))
	}
	got := countPubs(ws)
	conn, err := grpc.NewClient(n.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(apiKey(key)))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := heraldv1.NewHeraldServiceClient(conn)
	payload := []byte(`{"t":1732600000000000000,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	ctx := context.Background()
	b.ReportAllocs()
	cpu := processCPU()
	for b.Loop() {
		if _, err := client.Publish(ctx, &heraldv1.PublishRequest{Channel: "user:ann", Payload: &heraldv1.PublishRequest_RawJson{RawJson: payload}}); err != nil {
			b.Fatal(err)
		}
	}
	for end := time.Now().Add(30 * time.Second); got.Load() < int64(b.N); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			b.Fatalf("delivered %d of %d", got.Load(), b.N)
		}
	}
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}

// countPubs reads ws until it ends and counts the publications it carries.
func countPubs(ws *websocket.Conn) *atomic.Int64 {
	got := new(atomic.Int64)
	go func() {
		for {
			_, r, err := ws.NextReader()
			if err != nil {
				return
			}
			msg, _ := io.ReadAll(r)
			got.Add(int64(bytes.Count(msg, []byte(`{"pub":`))))
		}
	}()
	return got
}
