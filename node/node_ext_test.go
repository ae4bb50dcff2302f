package node_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/node"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func startNode(t testing.TB, edit func(*config.Config)) *node.Node {
	t.Helper()
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	if edit != nil {
		edit(&cfg)
	}
	n, err := node.Start(context.Background(), cfg, node.Serve, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n
}

func grpcClient(t testing.TB, n *node.Node) heraldv1.HeraldServiceClient {
	conn, err := grpc.NewClient(n.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return heraldv1.NewHeraldServiceClient(conn)
}

func httpDo(t *testing.T, method, url, body string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if method != "GET" && method != "HEAD" {
		// What a backend sends; refusals of other types are tested apart.
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRESTGateway(t *testing.T) {
	n := startNode(t, nil)
	base := "http://" + n.HTTPAddr.String()
	client := grpcClient(t, n)
	stream, err := client.Subscribe(context.Background(), &heraldv1.SubscribeRequest{Channel: "chat:lobby"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	code, body := httpDo(t, "POST", base+"/v1/channels/chat:lobby/publish", `{"data":{"text":"hi from curl"},"idempotency_key":"k1"}`)
	if code != 200 || !strings.Contains(body, `"offset":"1"`) {
		t.Fatalf("publish: %d %s", code, body)
	}
	ev, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.GetPublication().GetJson(); got != `{"text":"hi from curl"}` {
		t.Fatalf("gRPC subscriber got %v", ev)
	}
	// The same idempotency key over REST is a duplicate.
	code, body = httpDo(t, "POST", base+"/v1/channels/chat:lobby/publish", `{"data":{"text":"hi from curl"},"idempotency_key":"k1"}`)
	if code != 200 || !strings.Contains(body, `"duplicate":true`) {
		t.Fatalf("retry: %d %s", code, body)
	}
	code, body = httpDo(t, "GET", base+"/v1/channels/chat:lobby/history?limit=10", "")
	var hist struct {
		Publications []struct {
			Data map[string]any `json:"data"`
		} `json:"publications"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &hist) != nil || len(hist.Publications) != 1 || hist.Publications[0].Data["text"] != "hi from curl" {
		t.Fatalf("history: %d %s", code, body)
	}
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/v1/channels/nope:x/publish", `{"data":1}`, 400},
		{"POST", "/v1/channels/news/publish", `{}`, 400},
		{"POST", "/v1/channels/news/publish", `{"data":`, 400},
		{"POST", "/v1/channels/news/publish", `{"unknown_field":1}`, 400},
		{"GET", "/v1/channels/chat:lobby/presence", "", 200},
		{"GET", "/v1/channels/chat:lobby/presence/stats", "", 200},
		{"GET", "/v1/channels?pattern=chat:*", "", 200},
		{"GET", "/v1/info", "", 200},
		{"POST", "/v1/broadcast", `{"channels":["news","chat:a"],"data":"x"}`, 200},
		{"POST", "/v1/users/42/disconnect", `{"reason":"bye"}`, 200},
		{"GET", "/openapi.json", "", 200},
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
		{"GET", "/metrics", "", 200},
	} {
		if code, body := httpDo(t, tc.method, base+tc.path, tc.body); code != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.want)
		}
	}
}

func TestRESTNeedsKeyWhenConfigured(t *testing.T) {
	const key = "rest-test-key-0123456789"
	n := startNode(t, func(c *config.Config) { c.APIKeys = []config.APIKey{{Name: "t", Key: key}} })
	url := "http://" + n.HTTPAddr.String() + "/v1/channels/news/publish"
	if code, body := httpDo(t, "POST", url, `{"data":1}`); code != http.StatusUnauthorized {
		t.Fatalf("without key: %d %s", code, body)
	}
	if code, body := httpDo(t, "POST", url, `{"data":1}`, "Authorization", "Bearer "+key); code != 200 {
		t.Fatalf("with key: %d %s", code, body)
	}
}

func TestRefusesPublicAddressWithoutKeys(t *testing.T) {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "0.0.0.0:0", "127.0.0.1:0"
	_, err := node.Start(context.Background(), cfg, node.Serve, nil)
	if err == nil || !strings.Contains(err.Error(), "without API keys") {
		t.Fatalf("err = %v, want a refusal to listen without API keys", err)
	}
}

func TestShutdownEndsStreamsAndReturns(t *testing.T) {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	n, err := node.Start(context.Background(), cfg, node.Serve, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := grpcClient(t, n)
	stream, err := client.Subscribe(context.Background(), &heraldv1.SubscribeRequest{Channel: "news"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("shutdown took %v with a stream open", d)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream ended with %v, want Unavailable", err)
	}
}
